"""The ``quadgpt`` command: a table of subcommands, each a ``main(argv) -> int`` imported lazily
so that ``quadgpt info`` does not pay for accelerate or transformers, and a machine without
``datasets`` can still train."""

from __future__ import annotations

import difflib
import importlib
import sys

# name -> (module, one-line help); the module's ``main(argv) -> int`` runs the command
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("quadgpt.info", "parameters and FLOPs/token of every FFN kind at a config's width"),
    "prepare": ("data_prep.prepare", "tokenise a corpus into token shards (GPT-2 BPE or bytes)"),
    "train": ("quadgpt.trainer", "train a model (accelerate: CPU, one or many GPUs)"),
    "demo": ("quadgpt.demo", "prepare the built-in corpus, train the tiny model, sample"),
    "sample": ("quadgpt.sample_cli", "generate text from a checkpoint"),
    "export": ("quadgpt.hf.export", "export a checkpoint to Hugging Face format"),
    "import-hf": ("quadgpt.hf.import_gpt2", "turn a GPT-2 Hugging Face model into a checkpoint"),
    "plot": ("quadgpt.plotting", "plot train/val loss of one or more runs (PNG, PDF, SVG)"),
    "eval": ("eval.cli", "evaluation: `eval ppl` (perplexity), `eval forgetting` (probe)"),
    "compare": ("eval.compare", "train and compare FFN kinds at matched parameters"),
    "study": ("eval.study", "the full comparison: lr sweep, seeds, CIs, resumable (configs/study-*.toml)"),
}


def usage(prog: str, table: dict[str, tuple[str, str]]) -> str:
    width = max(map(len, table))
    lines = [f"usage: {prog} COMMAND [ARGS...]   ({prog} COMMAND --help for more)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in table.items()]
    return "\n".join(lines)


def dispatch(prog: str, table: dict[str, tuple[str, str]], argv: list[str]) -> int:
    """Run ``table[argv[0]]``'s module ``main`` on the remaining arguments (used by ``quadgpt``
    and ``quadgpt eval``); an unknown name exits 2 with a did-you-mean."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog, table))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"{prog}: unknown command '{name}'.{hint}\n\n{usage(prog, table)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(table[name][0]).main(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        from quadgpt import __version__

        print(__version__)
        return 0
    return dispatch("quadgpt", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
