"""Quadratic neurons: the product of two linear forms is the nonlinearity, no activation.

Hidden unit j of rank r::

    h_j = sum_{k<r} (x . u_jk)(x . v_jk) + x . w_j + b_j          (w_j optional)

then a Linear h -> d back into the residual stream. Parameters per hidden unit are
``(2r + [linear]) d`` for the first layer plus ``d`` for the down projection, so the
parameter-matched width against a 4d MLP is ``h = 8d / (2r + [linear] + 1)`` (rank 1 with the
linear term: ``h = 2d``), rounded by ``round_width`` (a multiple of 64 from 1024 up).

Initialisation: every factor (U, V, W) is drawn N(0, 0.02) like any GPT-2 weight, and the down
projection gets GPT-2's residual scaling ``0.02 / sqrt(2 n_layer)``. Why not a "near-linear" start
(one factor scaled down, as ReLinear / QuadraNet V2 do)? Because it was measured on this
project's behalf and lost: in a 6-layer d=384 GPT trained on ~20M tokens, scaling one factor by
0.1 ended 0.16 nats worse than plain init, and plain init trained without instability. Plain init
is stable for a structural reason: the block's input is LayerNorm-ed, so ``x.u`` and ``x.v`` are
each ~N(0, 0.02^2 d) (std 0.55 at d=768) and their product has std ~0.3 — the quadratic term
starts of the same order as the linear one, not exploding — and the small residual projection
keeps the stream of order 1 through depth (``tests/test_ffn.py`` checks a 12-layer model).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .base import FFN, init_linear_, init_normal_, round_width
from .functional import quadratic_hidden_reference


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton_kernel(kernel: str, x: torch.Tensor) -> bool:
    """Decide the path for one call: ``torch`` never, ``triton`` always (CPU only under
    ``TRITON_INTERPRET=1``), ``auto`` on CUDA tensors when Triton is importable."""
    if kernel == "torch":
        return False
    if kernel == "triton":
        if not triton_available():
            raise RuntimeError("ffn.kernel = 'triton' but Triton is not installed: pip install 'quadgpt[triton]'.")
        if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "ffn.kernel = 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 to run the kernel "
                "on the CPU, slowly); use ffn.kernel = 'auto' or 'torch' on the CPU."
            )
        return True
    return x.is_cuda and triton_available()


class QuadraticFFN(FFN):
    """Low-rank quadratic neurons followed by a Linear h -> d (see the module docstring)."""

    def __init__(self, d_model: int, cfg, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if cfg.rank < 1:
            raise ValueError(f"ffn.rank must be >= 1, got {cfg.rank}.")
        self.d_model = d_model
        self.rank = cfg.rank
        self.kernel = cfg.kernel
        self.hidden = cfg.hidden or self.default_hidden(d_model, cfg)
        self.u = nn.Parameter(torch.empty(self.rank, self.hidden, d_model))
        self.v = nn.Parameter(torch.empty(self.rank, self.hidden, d_model))
        self.w = nn.Parameter(torch.empty(self.hidden, d_model)) if cfg.linear_term else None
        self.b = nn.Parameter(torch.zeros(self.hidden)) if bias else None
        self.c_proj = nn.Linear(self.hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def default_hidden(d: int, cfg) -> int:
        return round_width(8 * d / (2 * cfg.rank + int(cfg.linear_term) + 1))

    @staticmethod
    def formula_params(d: int, hidden: int, cfg, bias: bool) -> int:
        first = (2 * cfg.rank + int(cfg.linear_term)) * d * hidden + (hidden if bias else 0)
        return first + hidden * d + (d if bias else 0)

    def init_weights(self, std: float, out_std: float) -> None:
        for p in (self.u, self.v, self.w):
            if p is not None:
                init_normal_(p, std)
        if self.b is not None:
            torch.nn.init.zeros_(self.b)
        init_linear_(self.c_proj, out_std)

    def forward_flops_per_token(self) -> int:
        d, h, r = self.d_model, self.hidden, self.rank
        n_proj = 2 * r + int(self.w is not None)
        # projections, r products and r-1 + [linear] + [bias] sums per hidden unit, down proj
        return 2 * d * h * n_proj + h * (2 * r + 1) + 2 * h * d

    def hidden_activations(self, x: torch.Tensor) -> torch.Tensor:
        if use_triton_kernel(self.kernel, x):
            from quadgpt.kernels.quadratic import quadratic_hidden

            return quadratic_hidden(x, self.u, self.v, self.w, self.b)
        return quadratic_hidden_reference(x, self.u, self.v, self.w, self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.hidden_activations(x)))

    def extra_repr(self) -> str:
        return f"rank={self.rank}, linear_term={self.w is not None}, kernel={self.kernel}, " + super().extra_repr()
