"""What every feed-forward block provides, so the model never needs to know which kind it holds."""

from __future__ import annotations

import torch
from torch import nn


def round_width(width: float, multiple: int | None = None) -> int:
    """Round a hidden width to the nearest positive multiple of ``multiple``; by default 64 (what
    GPU matmul tiles like) from width 1024 up, and 8 below it, where a step of 64 would cost more
    than the 2% parameter match allows (a d = 128 SwiGLU: 341 -> 320 would be -4%)."""
    if multiple is None:
        multiple = 64 if width >= 1024 else 8
    return max(multiple, int(round(width / multiple)) * multiple)


class FFN(nn.Module):
    """Base class of the feed-forward blocks: ``forward(x: [..., d]) -> [..., d]``.

    Subclasses set ``self.d_model`` and ``self.hidden`` and implement ``init_weights`` (GPT-2
    style: ``std`` for input-side weights, ``out_std`` for the projection back into the residual
    stream), ``forward_flops_per_token`` and the closed-form ``formula_params``.
    """

    d_model: int
    hidden: int

    def init_weights(self, std: float, out_std: float) -> None:
        raise NotImplementedError

    def forward_flops_per_token(self) -> int:
        """Forward-pass FLOPs for one token (matmuls at 2 per multiply-add, plus elementwise)."""
        raise NotImplementedError

    @staticmethod
    def formula_params(d: int, hidden: int, cfg, bias: bool) -> int:
        """The documented parameter count; tests check it against the real module."""
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, hidden={self.hidden}, params={self.num_params():,}"


def init_normal_(tensor: torch.Tensor, std: float) -> None:
    torch.nn.init.normal_(tensor, mean=0.0, std=std)


def init_linear_(linear: nn.Linear, std: float) -> None:
    init_normal_(linear.weight, std)
    if linear.bias is not None:
        torch.nn.init.zeros_(linear.bias)
