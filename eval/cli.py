"""``quadgpt eval SUBCOMMAND``: ``ppl`` (perplexity) or ``forgetting`` (the forgetting probe)."""

from __future__ import annotations

import sys

from quadgpt.cli import dispatch

SUBCOMMANDS = {
    "ppl": ("eval.perplexity", "perplexity, bits per byte of a checkpoint or HF export on data or a text file"),
    "forgetting": ("eval.forgetting", "train on task A then B and measure how much of A is forgotten"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("quadgpt eval", SUBCOMMANDS, list(sys.argv[1:] if argv is None else argv))
