"""SwiGLU (Shazeer 2020): ``(silu(x W1) * (x W3)) W2``, three matrices instead of two."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import FFN, init_linear_, round_width


class SwiGLU(FFN):
    """Params ``3 d h (+ 2h + d with bias)``; default ``h = 8d/3`` rounded by ``round_width``
    (a multiple of 64 from 1024 up), which matches the ``8 d^2`` of a 4d MLP (exactly at d = 768:
    h = 2048)."""

    def __init__(self, d_model: int, cfg, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.hidden = cfg.hidden or self.default_hidden(d_model, cfg)
        self.c_gate = nn.Linear(d_model, self.hidden, bias=bias)
        self.c_up = nn.Linear(d_model, self.hidden, bias=bias)
        self.c_proj = nn.Linear(self.hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def default_hidden(d: int, cfg) -> int:
        return round_width(8 * d / 3)

    @staticmethod
    def formula_params(d: int, hidden: int, cfg, bias: bool) -> int:
        return 3 * d * hidden + (2 * hidden + d if bias else 0)

    def init_weights(self, std: float, out_std: float) -> None:
        init_linear_(self.c_gate, std)
        init_linear_(self.c_up, std)
        init_linear_(self.c_proj, out_std)

    def forward_flops_per_token(self) -> int:
        # three matmuls, silu (~5 flops) and the gating product per hidden unit
        return 6 * self.d_model * self.hidden + 6 * self.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.silu(self.c_gate(x)) * self.c_up(x)))
