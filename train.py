"""Train a quadgpt model: ``python train.py --config configs/tiny.toml [--section.key=value ...]``.

The same as ``quadgpt train``; kept as a file so that ``accelerate launch train.py`` and
``torchrun --nproc_per_node N train.py`` work as nanoGPT users expect.
"""

import sys

from quadgpt.trainer import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
