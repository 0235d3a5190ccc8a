"""Helpers every Triton kernel in ``quadgpt.kernels`` shares: interpreter detection, per-GPU
autotune configs, and the flattening of ``[..., d]`` inputs the kernels see as ``[N, d]``.

Why an ``autotune`` wrapper: ``triton.autotune`` benchmarks its configs through the GPU driver,
which does not exist under ``TRITON_INTERPRET=1`` (the CPU interpreter the tests run in). There
we launch one fixed, small config instead (blocks of 16 make tiny test shapes span several tiles,
so masks and ragged edges are exercised). On a GPU the config list is chosen by architecture:
Hopper (sm90+) has 228 KB of shared memory and warpgroup MMAs that favour bigger tiles and more
pipeline stages than Ampere (sm80/86, 164/100 KB).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import torch
import triton

__all__ = [
    "interpreting",
    "cuda_capability",
    "select_configs",
    "autotune",
    "dot_precision",
    "check_float_dtype",
    "flatten_rows",
]

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (``TRITON_INTERPRET=1``).

    Triton reads the variable when ``@triton.jit`` decorates a function, so it must be set before
    a kernel module is imported; this reads the same variable, so both agree."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def cuda_capability() -> tuple[int, int] | None:
    """Compute capability of the current CUDA device, or None without one."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability()


def select_configs(hopper: Sequence[triton.Config], ampere: Sequence[triton.Config]) -> list[triton.Config]:
    """The autotune candidates for this machine: ``hopper`` on sm90 and newer, else ``ampere``."""
    capability = cuda_capability()
    if capability is not None and capability[0] >= 9:
        return list(hopper)
    return list(ampere)


def autotune(
    *,
    hopper: Sequence[triton.Config],
    ampere: Sequence[triton.Config],
    interpret: triton.Config,
    key: list[str],
    **autotune_kwargs,
) -> Callable:
    """``triton.autotune`` over the configs for this GPU, or over ``interpret`` alone under the
    interpreter (a single config is launched without benchmarking, so no driver is needed)."""
    configs = [interpret] if interpreting() else select_configs(hopper, ampere)
    return triton.autotune(configs=configs, key=key, **autotune_kwargs)


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s ``input_precision`` that matches what ``torch.matmul`` would do for ``dtype``:
    TF32 for fp32 only when PyTorch allows it (``torch.backends.cuda.matmul.allow_tf32``), so the
    kernel and the reference round alike; fp16/bf16 ignore the setting."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def check_float_dtype(name: str, tensor: torch.Tensor) -> None:
    """Raise a clear error for dtypes the kernels do not implement."""
    if tensor.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"{name} has dtype {tensor.dtype}; the Triton kernels take float16, bfloat16 or float32 "
            "(cast it, or set ffn.kernel = 'torch')."
        )


def flatten_rows(x: torch.Tensor) -> torch.Tensor:
    """``x [..., d]`` as a row-contiguous ``[N, d]`` matrix (a view when possible): the layout
    every kernel indexes with a row stride and unit column stride."""
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return x2
