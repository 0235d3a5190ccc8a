"""``quadgpt eval SUBCOMMAND``: ``ppl`` (perplexity) or ``forgetting`` (the forgetting probe)."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "ppl": ("eval.perplexity", "perplexity, bits per byte of a checkpoint or HF export on data or a text file"),
    "forgetting": ("eval.forgetting", "train on task A then B and measure how much of A is forgotten"),
}


def usage() -> str:
    lines = ["usage: quadgpt eval SUBCOMMAND [ARGS...]   (quadgpt eval SUBCOMMAND --help for more)", "", "subcommands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"quadgpt eval: unknown subcommand '{argv[0]}'.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)
