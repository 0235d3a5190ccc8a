"""Run logging: ``metrics.jsonl`` (the record other tools read), console lines, optional
TensorBoard and W&B, and model FLOPs utilisation (MFU) against the accelerator's peak.

``metrics.jsonl`` has one JSON object per line: a training line per ``log_interval``
(``"kind": "train"``: step, tokens, elapsed, loss, lr, grad_norm, tokens_per_s, mfu) and one per
evaluation (``"kind": "eval"``: step, tokens, elapsed, val_loss, val_ppl, ``val_loss/<name>`` for
extra validation sets). Only rank 0 writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from .atomic import write_text_atomic

METRICS_FILE = "metrics.jsonl"

# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (no sparsity). Keyed by a
# substring of torch.cuda.get_device_name(); the first match wins, so specific names come first.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 125.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 tensor cores: V100 has no bf16
    ("T4", 65.0),  # fp16 tensor cores
]


def peak_tflops(device: torch.device, override: float = 0.0) -> float | None:
    """Peak dense bf16 TFLOP/s of one accelerator: ``override`` if > 0, else the table's entry
    for the CUDA device's name, else None (CPUs and unknown GPUs: no MFU is reported)."""
    if override > 0:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None, world_size: int = 1) -> float | None:
    """Achieved / peak FLOP/s over all processes (nanoGPT's convention: 6N + 12LdT per token)."""
    if peak is None or tokens_per_s <= 0:
        return None
    return flops_per_token * tokens_per_s / (peak * 1e12 * world_size)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist: is '{run_dir}' a quadgpt run folder (train.out_dir)?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """Drop records after ``last_step`` (the tail a crash lost), atomically: a resumed run then
    appends its own records for those steps instead of duplicating them."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def set_aside_metrics(run_dir: str | Path) -> Path | None:
    """Rename the ``metrics.jsonl`` of an earlier run in ``run_dir`` to ``metrics.abandoned-<N>.jsonl``
    (kept, never deleted) and return its new path; None if there was none.

    Called when a run starts from step 0 in a folder that holds no checkpoint: whatever is in
    the record then belongs to a run that died before saving, and appending to it would mix
    two runs in one curve.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    n = 1
    while (aside := path.with_name(f"metrics.abandoned-{n}.jsonl")).exists():
        n += 1
    path.rename(aside)
    return aside


def format_line(record: dict[str, Any]) -> str:
    """A short human line for the console."""
    parts = [f"step {record['step']}"]
    for key, fmt in (
        ("loss", "loss {:.4f}"),
        ("val_loss", "val {:.4f}"),
        ("val_ppl", "ppl {:.2f}"),
        ("lr", "lr {:.2e}"),
        ("grad_norm", "gnorm {:.3f}"),
        ("tokens_per_s", "{:,.0f} tok/s"),
        ("mfu", "mfu {:.1%}"),
    ):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    parts += [f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_loss/")]
    if record.get("skipped_steps"):
        parts.append(f"skipped {record['skipped_steps']}")
    return " | ".join(parts)


class RunLogger:
    """Writes records to metrics.jsonl (append, flushed per line), TensorBoard and W&B.

    Created on every rank; all but rank 0 ignore records, so callers need no rank checks.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool, config: dict[str, Any] | None = None,
                 tensorboard: bool = False, wandb: bool = False, wandb_project: str = "quadgpt") -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._file = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_FILE, "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("quadgpt: train.tensorboard=true but tensorboard is not installed "
                      "(pip install 'quadgpt[tensorboard]'); logging to metrics.jsonl only.", file=sys.stderr)
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                print("quadgpt: train.wandb=true but wandb is not installed "
                      "(pip install 'quadgpt[wandb]'); logging to metrics.jsonl only.", file=sys.stderr)
            else:
                self._wandb = wandb_module.init(project=wandb_project, dir=str(self.run_dir), config=config,
                                                name=self.run_dir.name, resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step",)}
        if self._tb is not None:
            prefix = "val" if record.get("kind") == "eval" else "train"
            for key, value in numbers.items():
                self._tb.add_scalar(key if "/" in key else f"{prefix}/{key}", value, record["step"])
        if self._wandb is not None:
            self._wandb.log(numbers, step=record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
