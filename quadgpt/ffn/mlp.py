"""The GPT-2 feed-forward block: Linear d->h, an activation, Linear h->d (default h = 4d).

Activations: GELU (exact or tanh), ReLU, and ReLU² = relu(x)² (modded-nanogpt, nanochat). ReLU²
is itself a piecewise-quadratic neuron, which makes it the natural control for ``quadratic``: the
same parameters and matmuls as the GELU MLP, a squared instead of a smooth unit.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FFN, init_linear_
from .functional import mlp_activation

# Elementwise FLOPs per hidden unit of each activation (rough counts; matmuls dominate).
_ACTIVATION_FLOPS = {"relu": 1, "relu2": 2, "gelu": 8, "gelu_tanh": 8}


class MLP(FFN):
    """``y = act(x W1 + b1) W2 + b2``; params ``2 d h (+ h + d with bias)``."""

    def __init__(self, d_model: int, cfg, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.hidden = cfg.hidden or self.default_hidden(d_model, cfg)
        self.activation = cfg.activation
        self.c_fc = nn.Linear(d_model, self.hidden, bias=bias)
        self.c_proj = nn.Linear(self.hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def default_hidden(d: int, cfg) -> int:
        return 4 * d

    @staticmethod
    def formula_params(d: int, hidden: int, cfg, bias: bool) -> int:
        return 2 * d * hidden + (hidden + d if bias else 0)

    def init_weights(self, std: float, out_std: float) -> None:
        init_linear_(self.c_fc, std)
        init_linear_(self.c_proj, out_std)

    def forward_flops_per_token(self) -> int:
        return 4 * self.d_model * self.hidden + _ACTIVATION_FLOPS[self.activation] * self.hidden

    def act(self, h: torch.Tensor) -> torch.Tensor:
        return mlp_activation(h, self.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))

    def extra_repr(self) -> str:
        return f"activation={self.activation}, " + super().extra_repr()
