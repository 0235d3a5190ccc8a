"""DDP against FSDP2 (and each with activation checkpointing) on every process of one launch:
tokens/s and peak memory of a training step, one Markdown row per mode.

    torchrun --standalone --nproc_per_node $(nvidia-smi -L | wc -l) bench/distributed.py    # gpt2-small
    torchrun --standalone --nproc_per_node 2 bench/distributed.py --config configs/tiny.toml \\
        --device cpu --batch-size 2 --steps 2 --warmup 1                                  # CPU smoke run

Each mode builds the model afresh and wraps it with ``quadgpt.parallel.parallelize`` exactly as
the trainer does (accelerate's DDP, or ``fully_shard`` per block then the root with bf16
parameters and fp32 gradient reduction), then times ``--steps`` AdamW steps on random tokens after
``--warmup`` steps (no data loading, no checkpoints). tokens/s counts all processes; peak memory
is ``torch.cuda.max_memory_allocated`` of rank 0 over the mode's steps (parameters, gradients,
optimizer state and activations); on a CPU it is not measured. Run from a checkout with
``PYTHONPATH=.`` or the ``sys.path`` line below.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from quadgpt import parallel  # noqa: E402
from quadgpt.config import load_config  # noqa: E402
from quadgpt.model import GPT  # noqa: E402
from quadgpt.trainer import make_accelerator  # noqa: E402

MODES = {"ddp": (False, False), "fsdp": (True, False), "ddp+ac": (False, True), "fsdp+ac": (True, True)}


def run_mode(config, acc, fsdp: bool, checkpointing: bool, args) -> tuple[float, float | None]:
    """(tokens/s over all processes, peak GiB on this process or None on a CPU) for one mode."""
    torch.manual_seed(0)
    model = parallel.parallelize(GPT(config.model), acc, fsdp=fsdp, activation_checkpointing=checkpointing,
                                 dtype=acc.mixed_precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=acc.device.type == "cuda")
    shape = (args.batch_size, config.model.block_size)
    x = torch.randint(0, config.model.vocab_size, shape, device=acc.device)
    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            acc.wait_for_everyone()
            if acc.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with acc.autocast():
            loss = model(x, x)[1]
        loss.backward()
        parallel.clip_grad_norm_(model, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if acc.device.type == "cuda":
        torch.cuda.synchronize()
    acc.wait_for_everyone()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if acc.device.type == "cuda" else None
    del model, optimizer, loss
    acc.free_memory()
    gc.collect()
    if acc.device.type == "cuda":
        torch.cuda.empty_cache()
    return args.steps * shape[0] * shape[1] * acc.num_processes / seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/gpt2-small.toml")
    parser.add_argument("--modes", default="ddp,fsdp,ddp+ac,fsdp+ac", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per process per step")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    config = load_config(args.config, [f"--train.device={args.device}"])
    acc = make_accelerator(config)
    if acc.num_processes < 2:
        parser.error("run under torchrun or accelerate launch with 2 or more processes (see the usage above)")
    rows = [(mode, *run_mode(config, acc, *MODES[mode], args)) for mode in modes]
    if acc.is_main_process:
        device = torch.cuda.get_device_name() if acc.device.type == "cuda" else "cpu"
        print(f"{args.config}, {acc.num_processes} x {device}, precision {acc.mixed_precision}, "
              f"batch {args.batch_size} x {config.model.block_size} per process, torch {torch.__version__}\n")
        print("| mode | tokens/s (all processes) | vs ddp | peak memory per GPU (GiB) |")
        print("|---|---|---|---|")
        base = dict((m, tps) for m, tps, _ in rows).get("ddp")
        for mode, tps, peak in rows:
            ratio = f"{tps / base:.2f}" if base else "n/a"
            print(f"| {mode} | {tps:,.0f} | {ratio} | {f'{peak:.2f}' if peak is not None else 'n/a (CPU)'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
