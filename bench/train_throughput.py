"""Training throughput of the real trainer per FFN kind: tokens/s, MFU, and each as a ratio to ``mlp``.

    python bench/train_throughput.py                       # GPU: gpt2-small, every kind, bf16 + compile
    python bench/train_throughput.py --kinds mlp,quadratic --batch-size 32 --block-size 1024
    python bench/train_throughput.py --config configs/tiny.toml --kinds mlp,swiglu --steps 6 \\
        --warmup 2 --device cpu --no-compile              # CPU smoke run (numbers meaningless)
    python bench/train_throughput.py --config configs/study-cpu.toml --kinds mlp,kan \\
        --data data/stdlib-code-bytes --batch-size 8 --steps 100 --device cpu --no-compile   # the CPU study's model

Each kind runs ``quadgpt.trainer.Trainer`` itself: data loading from token shards, the loss
exchange between processes, logging to metrics.jsonl, evaluation at step 0 and one checkpoint at
the end (outside the timed steps). tokens/s is the median over the log intervals after
``--warmup`` steps (compilation and allocator warm-up excluded); MFU uses the trainer's formula
(``GPT.flops_per_token``: nanoGPT's 6N + 12LdT plus each FFN's own FLOP count) against the
accelerator's bf16 peak (``quadgpt.logging_utils.PEAK_BF16_TFLOPS``, or ``--peak-tflops``).
The dataset (``--data``, default data/stdlib) is prepared from builtin:stdlib when missing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from quadgpt.config import load_config  # noqa: E402
from quadgpt.ffn import FFN_REGISTRY  # noqa: E402
from quadgpt.logging_utils import read_metrics  # noqa: E402
from quadgpt.trainer import Trainer  # noqa: E402


def measure(args: argparse.Namespace, kind: str, out_dir: Path) -> dict:
    """Train ``kind`` for warmup + steps optimizer steps; return its throughput row."""
    overrides = [
        f"model.ffn.kind={kind}", f"data.dataset={args.data}", "data.val_windows=8",
        f"train.out_dir={out_dir}", f"train.batch_size={args.batch_size}", "train.global_batch_tokens=0",
        f"train.max_steps={args.warmup + args.steps}", f"train.log_interval={args.log_interval}",
        f"train.eval_interval={10**9}", f"train.ckpt_interval={10**9}", f"train.compile={args.compile}",
        f"train.device={args.device}", f"train.peak_tflops={args.peak_tflops}", "train.warmup_steps=10",
    ]
    if args.block_size:
        overrides.append(f"model.block_size={args.block_size}")
    config = load_config(args.config, overrides + args.overrides)
    trainer = Trainer(config)
    params = trainer.raw_model.num_params()
    trainer.run()
    records = [r for r in read_metrics(out_dir) if r.get("kind") == "train" and r["step"] > args.warmup]
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not records:
        raise SystemExit(f"No log interval after the warm-up for {kind}: raise --steps above --log-interval.")
    mfus = [r["mfu"] for r in records if r.get("mfu") is not None]
    return {
        "kind": kind,
        "params": params,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records),
        "mfu": statistics.median(mfus) if mfus else None,
    }


def format_table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["kind"] == "mlp"), rows[0])
    lines = [
        f"| FFN | params (non-emb) | tokens/s | MFU | tokens/s vs {base['kind']} |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['kind']} | {r['params'] / 1e6:.2f}M | {r['tokens_per_s']:,.0f} | {mfu} | "
                     f"{r['tokens_per_s'] / base['tokens_per_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "gpt2-small.toml"))
    parser.add_argument("--kinds", default=",".join(FFN_REGISTRY), help="comma-separated FFN kinds (mlp first: the ratio base)")
    parser.add_argument("--data", default="data/stdlib", help="prepared dataset (prepared from builtin:stdlib if missing)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    parser.add_argument("--block-size", type=int, default=0, help="sequence length (0: the config's)")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation)")
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="override the peak table (e.g. for a CPU)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    parser.add_argument("overrides", nargs="*", help="more section.key=value overrides")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "meta.json").is_file():  # in the config's tokenizer: the model must fit the data
        from data_prep.prepare import prepare

        prepare("builtin:stdlib", args.data, tokenizer=load_config(args.config).model.tokenizer)
    rows = []
    with tempfile.TemporaryDirectory(prefix="quadgpt-bench-") as tmp:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            rows.append(measure(args, kind, Path(tmp) / kind))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"\n{device}, batch {args.batch_size}, compile={args.compile}, median over steps "
          f"{args.warmup + 1}..{args.warmup + args.steps}\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
