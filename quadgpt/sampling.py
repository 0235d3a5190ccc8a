"""Decoding: turning the last position's logits into the next token.

Order of operations: temperature, then top-k, then top-p (nucleus), then a draw from the
renormalised distribution. ``temperature = 0`` is greedy (argmax) and ignores the rest.
"""

from __future__ import annotations

import math

import torch


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """ValueError naming the first setting that cannot be sampled with (NaN and inf included)."""
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy); got {temperature}.")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off); got {top_k}.")
    if top_p is not None and not 0.0 < top_p <= 1.0:  # also refuses NaN
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}.")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set of mass >= top_p."""
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``logits [B, V]`` -> token ids ``[B]``."""
    check_sampling_args(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
