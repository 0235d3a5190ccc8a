"""Causal attention backends behind one function.

- ``sdpa``: ``F.scaled_dot_product_attention`` (FlashAttention / memory-efficient kernels on GPU).
- ``flash_attn``: the flash-attn package (``pip install 'quadgpt[flash]'``), CUDA, fp16/bf16.
- ``math``: softmax(QK^T / sqrt(D)) V written out; the reference the others are tested against.
- ``auto``: flash_attn when it is installed and the call can use it, else sdpa.

All take ``q [B, H, Tq, D]`` and ``k, v [B, H, Tk, D]`` with ``Tk = q_offset + Tq``: query i sits
at absolute position ``q_offset + i`` and sees keys ``0 .. q_offset + i`` (so a KV-cached decode
step, ``Tq = 1``, sees the whole cache).
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "flash_attn", "math")


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def check_backend(name: str) -> None:
    """Fail early, with the fix, for a backend that cannot run here."""
    if name not in BACKENDS:
        raise ValueError(f"Unknown attention backend '{name}'. Choose one of: {', '.join(BACKENDS)}.")
    if name == "flash_attn" and not flash_attn_installed():
        raise RuntimeError(
            "model.attention = 'flash_attn' but the flash-attn package is not installed. "
            "Install it (pip install 'quadgpt[flash]', needs CUDA) or use 'auto' / 'sdpa'."
        )


def available_backends() -> list[str]:
    """Concrete backends usable on this machine (flash_attn only with CUDA)."""
    names = ["sdpa", "math"]
    if flash_attn_installed() and torch.cuda.is_available():
        names.insert(0, "flash_attn")
    return names


def _flash_attn_usable(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_attn_installed()


def causal_mask(t_q: int, t_k: int, device: torch.device) -> torch.Tensor:
    """Boolean [Tq, Tk], True where query (at t_k - t_q + i) may attend key j."""
    q_pos = torch.arange(t_k - t_q, t_k, device=device).unsqueeze(1)
    return torch.arange(t_k, device=device).unsqueeze(0) <= q_pos


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    probs = F.softmax(scores.float(), dim=-1).to(q.dtype)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    t_q, t_k = q.size(-2), k.size(-2)
    if t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    # SDPA's is_causal aligns the mask top-left; a cached query block needs it bottom-right.
    mask = None if t_q == 1 else causal_mask(t_q, t_k, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def attention_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    from flash_attn import flash_attn_func  # optional dependency

    # flash-attn wants [B, T, H, D]; its causal mask is bottom-right aligned, as a KV cache needs.
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p, causal=True)
    return out.transpose(1, 2)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto", dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal attention of ``q`` over ``k, v`` with the chosen backend (see module docstring)."""
    if backend == "auto":
        backend = "flash_attn" if _flash_attn_usable(q) else "sdpa"
    if backend == "sdpa":
        return attention_sdpa(q, k, v, dropout_p)
    if backend == "math":
        return attention_math(q, k, v, dropout_p)
    if backend == "flash_attn":
        check_backend(backend)
        return attention_flash(q, k, v, dropout_p)
    raise ValueError(f"Unknown attention backend '{backend}'. Choose one of: {', '.join(BACKENDS)}.")
