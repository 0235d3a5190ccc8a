"""Kolmogorov-Arnold feed-forward: two KAN layers d -> h -> d, a learned function on every edge.

Each edge (i -> j) carries a univariate function, a cubic B-spline on a uniform grid plus an
optional SiLU "base" branch (Liu et al. 2024, in efficient-kan's basis-then-matmul form)::

    y_j = sum_i  [ sum_b c_jib B_b(tanh(x_i))  +  w_ji silu(x_i) ]

Keeping inputs inside the grid: the spline sees ``tanh(x)``, so the grid is ``[-1, 1]`` with
``G`` uniform intervals (extended by ``k`` knots on each side, giving ``G + k`` bases) and every
input, however large, lands inside it where the bases form a partition of unity. The squash is
monotone, so each basis is still local in ``x`` (what the KAN paper's forgetting argument needs),
and it needs no state — unlike a grid range sized to activation statistics, which drifts as the
residual stream grows and silently leaves inputs on the flat zero part of the spline. Pre-LN
inputs are ~N(0, 1), so most of the grid's resolution sits where the data is.

Parameters: ``(G + k + [base]) (d h + h d)`` — no biases (a spline can absorb a constant).
The parameter-matched width against a 4d MLP (``8 d^2``) is ``h = 4d / (G + k + [base])``,
rounded to a multiple of 16 (of 8 below 256): d = 768, G = 5, k = 3, SiLU base gives h = 336 (-1.6%).
Options: ``base = "none"`` drops the global SiLU branch; ``freeze_base`` keeps it fixed at init.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FFN, init_normal_, round_width
from .functional import b_spline_bases, kan_layer_reference  # noqa: F401  (b_spline_bases: public here too)
from .quadratic import use_triton_kernel


class KANLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int, cfg):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = cfg.grid_size, cfg.spline_order
        self.kernel = cfg.kernel
        n_bases = cfg.grid_size + cfg.spline_order
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, n_bases))
        self.base_weight = None
        if cfg.base == "silu":
            self.base_weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=not cfg.freeze_base)

    def init_weights(self, std: float) -> None:
        init_normal_(self.spline_weight, std)
        if self.base_weight is not None:
            init_normal_(self.base_weight, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the fused kernel covers orders <= 3; "auto" falls back to PyTorch beyond that
        if use_triton_kernel(self.kernel, x) and (self.spline_order <= 3 or self.kernel == "triton"):
            from quadgpt.kernels.kan import kan_layer

            return kan_layer(x, self.spline_weight, self.base_weight, self.grid_size, self.spline_order)
        return kan_layer_reference(x, self.spline_weight, self.base_weight, self.grid_size, self.spline_order)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, grid={self.grid_size}, "
            f"order={self.spline_order}, base={'silu' if self.base_weight is not None else 'none'}"
        )


class KANFFN(FFN):
    """Two KAN layers, d -> h -> d (see the module docstring for the formula and width)."""

    def __init__(self, d_model: int, cfg, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if cfg.grid_size < 1 or cfg.spline_order < 0:
            raise ValueError("ffn.grid_size must be >= 1 and ffn.spline_order >= 0.")
        self.d_model = d_model
        self.hidden = cfg.hidden or self.default_hidden(d_model, cfg)
        self.grid_size, self.spline_order = cfg.grid_size, cfg.spline_order
        self.layer1 = KANLayer(d_model, self.hidden, cfg)
        self.layer2 = KANLayer(self.hidden, d_model, cfg)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def _per_edge(cfg) -> int:
        return cfg.grid_size + cfg.spline_order + int(cfg.base == "silu")

    @classmethod
    def default_hidden(cls, d: int, cfg) -> int:
        width = 4 * d / cls._per_edge(cfg)
        # multiples of 16 let the Triton kernel's tl.dot tiles pipeline their loads; below 256 a
        # step of 16 would break the 2% parameter match, so small models round to 8
        return round_width(width, 16 if width >= 256 else 8)

    @classmethod
    def formula_params(cls, d: int, hidden: int, cfg, bias: bool) -> int:
        return cls._per_edge(cfg) * 2 * d * hidden

    def init_weights(self, std: float, out_std: float) -> None:
        self.layer1.init_weights(std)
        self.layer2.init_weights(out_std)

    def forward_flops_per_token(self) -> int:
        d, h = self.d_model, self.hidden
        n_bases = self.grid_size + self.spline_order
        has_base = self.layer1.base_weight is not None
        matmul = 2 * 2 * d * h * (n_bases + int(has_base))
        # per input element: tanh (~4), the k+1 nonzero bases by the uniform-grid closed form
        # (~4 (k+1)), silu (~5) when the base branch is on
        per_input = 4 + 4 * (self.spline_order + 1) + (5 if has_base else 0)
        return matmul + per_input * (d + h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer2(self.layer1(x)))
