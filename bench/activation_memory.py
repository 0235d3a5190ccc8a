"""Memory that activation checkpointing saves: peak resident memory of one forward + backward of a
model, with and without ``train.activation_checkpointing``, each in a fresh process.

    PYTHONPATH=. python bench/activation_memory.py                          # gpt2-small, 1 x 1024, CPU
    PYTHONPATH=. python bench/activation_memory.py --config configs/tiny.toml --batch-size 8

Measured on the CPU in fp32: each child builds the model (and its gradients are not yet allocated),
reads its resident set size (``/proc/self/statm``), runs one forward + backward, and reports the peak
resident set size (``getrusage``'s ``ru_maxrss``) minus that baseline: the activations the backward
keeps plus the gradients (the same in both modes) and transient buffers. The difference between the
two rows is what checkpointing saves. glibc's default allocator is left on (large blocks are
``mmap``ed and returned when freed), so the peak is what was live at once, not heap fragmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def measure(config_path: str, batch: int, checkpointing: bool) -> dict[str, float]:
    """In this process: MiB of (peak RSS - RSS before the step) for one forward + backward."""
    import torch

    from quadgpt import parallel
    from quadgpt.config import load_config
    from quadgpt.model import GPT
    config = load_config(config_path, [])
    torch.manual_seed(0)
    model = GPT(config.model)
    if checkpointing:
        parallel.apply_activation_checkpointing(model)
    x = torch.randint(0, config.model.vocab_size, (batch, config.model.block_size))
    page = os.sysconf("SC_PAGE_SIZE")
    before = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
    model(x, x)[1].backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()) / 2**20
    return {"before_mib": before, "peak_mib": peak, "step_mib": peak - before, "grads_mib": grads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/gpt2-small.toml")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.config, args.batch_size, args.child == "on")))
        return 0
    rows = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--config", args.config, "--batch-size", str(args.batch_size), "--child", mode]
        rows[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"{args.config}, batch {args.batch_size}, one forward + backward on the CPU (fp32); MiB of resident memory\n")
    print("| activation checkpointing | peak RSS | RSS before the step | step's peak growth | of which gradients |")
    print("|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['peak_mib']:,.0f} | {r['before_mib']:,.0f} | {r['step_mib']:,.0f} | {r['grads_mib']:,.0f} |")
    saved = rows["off"]["step_mib"] - rows["on"]["step_mib"]
    print(f"\nsaved by checkpointing: {saved:,.0f} MiB ({saved / rows['off']['step_mib']:.0%} of the step's growth)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
