"""Feed-forward blocks, one file per kind, and the registry the model builds them from.

Adding a kind: write ``ffn/<kind>.py`` with an ``FFN`` subclass and add one line below.
"""

from __future__ import annotations

import difflib

from .base import FFN
from .kan import KANFFN
from .mlp import MLP
from .quadratic import QuadraticFFN
from .swiglu import SwiGLU

FFN_REGISTRY: dict[str, type[FFN]] = {
    "mlp": MLP,
    "swiglu": SwiGLU,
    "quadratic": QuadraticFFN,
    "kan": KANFFN,
}


def ffn_class(kind: str) -> type[FFN]:
    try:
        return FFN_REGISTRY[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, FFN_REGISTRY, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown FFN kind '{kind}'.{hint} Known kinds: {', '.join(FFN_REGISTRY)}.") from None


def build_ffn(cfg, d_model: int, bias: bool = True, dropout: float = 0.0) -> FFN:
    """Build the FFN named by ``cfg.kind`` (an ``FFNConfig``) for width ``d_model``."""
    return ffn_class(cfg.kind)(d_model, cfg, bias=bias, dropout=dropout)


def ffn_hidden(cfg, d_model: int) -> int:
    """The hidden width ``build_ffn`` would use."""
    return cfg.hidden or ffn_class(cfg.kind).default_hidden(d_model, cfg)


__all__ = ["FFN", "FFN_REGISTRY", "build_ffn", "ffn_class", "ffn_hidden", "MLP", "SwiGLU", "QuadraticFFN", "KANFFN"]
