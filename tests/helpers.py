"""Small model configs shared by tests."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from quadgpt.config import FFNConfig, ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

FFN_KINDS = ("mlp", "swiglu", "quadratic", "kan")


def tiny_model_config(kind: str = "mlp", **overrides) -> ModelConfig:
    """A 2-layer, width-32 GPT over a 64-token vocabulary: milliseconds per step on a CPU."""
    ffn_fields = {f.name for f in dataclasses.fields(FFNConfig)}
    ffn_over = {k: v for k, v in overrides.items() if k in ffn_fields}
    model_over = {k: v for k, v in overrides.items() if k not in ffn_fields}
    base = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=64, bias=True)
    base.update(model_over)
    return ModelConfig(**base, ffn=FFNConfig(kind=kind, **ffn_over))


def run_group(cmds: list[list[str]], cwd: Path, timeout: float = 150, expect_rc: int = 0) -> list[str]:
    """Run ``cmds`` concurrently (e.g. the torchrun agents of several nodes), one thread each,
    each in its own process group so a hang is killed whole; fail unless all exit ``expect_rc``.
    Returns their combined stdout+stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for cmd in cmds]
    outs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"{proc.args[:6]} hung; its output:\n{out[-3000:]}")
        outs.append(out)
    for proc, out in zip(procs, outs):
        assert proc.returncode == expect_rc, out[-3000:]
    return outs


def torchrun(args: list[str], cwd: Path, nproc: int = 2, launcher: list[str] | None = None, **kwargs) -> str:
    """``torchrun --standalone --nproc_per_node nproc train.py ARGS`` (or ``launcher`` in place of
    ``--standalone``); returns its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *(launcher or ["--standalone"]),
           "--nproc_per_node", str(nproc), str(REPO_ROOT / "train.py"), *args]
    return run_group([cmd], cwd, **kwargs)[0]
