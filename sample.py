"""Generate text from a checkpoint: ``python sample.py CKPT [options]`` (same as ``quadgpt sample``)."""

import sys

from quadgpt.sample_cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
