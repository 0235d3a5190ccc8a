"""The ``quadgpt`` command: a table of subcommands, each a ``main(argv) -> int`` imported lazily
so that ``quadgpt info`` does not pay for accelerate or transformers, and a machine without
``datasets`` can still train."""

from __future__ import annotations

import difflib
import importlib
import sys

# name -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("quadgpt.info", "main", "parameters and FLOPs/token of every FFN kind at a config's width"),
    "prepare": ("data_prep.prepare", "main", "tokenise a corpus into GPT-2 token shards"),
    "train": ("quadgpt.trainer", "main", "train a model (accelerate: CPU, one or many GPUs)"),
    "demo": ("quadgpt.demo", "main", "prepare the built-in corpus, train the tiny model, sample"),
    "sample": ("quadgpt.sample_cli", "main", "generate text from a checkpoint"),
    "export": ("quadgpt.hf.export", "main", "export a checkpoint to Hugging Face format"),
    "import-hf": ("quadgpt.hf.import_gpt2", "main", "turn a GPT-2 Hugging Face model into a checkpoint"),
    "plot": ("quadgpt.plotting", "main", "plot train/val loss of one or more runs (PNG)"),
    "eval": ("eval.cli", "main", "evaluation: `eval ppl` (perplexity), `eval forgetting` (probe)"),
    "compare": ("eval.compare", "main", "train and compare FFN kinds at matched parameters"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: quadgpt COMMAND [ARGS...]   (quadgpt COMMAND --help for more)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "--version":
        from quadgpt import __version__

        print(__version__)
        return 0
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"quadgpt: unknown command '{name}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
