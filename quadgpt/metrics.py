"""Evaluation arithmetic: perplexity, bits per byte, forgetting and backward transfer.

Pure functions on numbers (no model, no I/O), so every reported figure can be checked by hand
and by tests on hand-made values.

Conventions. Losses are mean cross-entropies in nats per token. Forgetting metrics work on
losses, not accuracies, so "higher is worse": a positive forgetting or a positive backward
transfer (BWT) means the loss on an earlier task *rose* after training on later ones. GEM's BWT
(Lopez-Paz & Ranzato 2017) is defined on accuracies, where negative means forgetting; applying
the same formula to losses flips the sign, which keeps forgetting and BWT agreeing in sign.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def perplexity(loss: float) -> float:
    """``exp(loss)``: the effective number of equally likely next tokens (inf on overflow)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def mean_loss(total_nats: float, n_tokens: int) -> float:
    """Mean loss per token from a sum of token losses; ``n_tokens`` must be positive."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive to average a loss; got {n_tokens}.")
    return total_nats / n_tokens


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    """Total nats / (ln 2 * UTF-8 bytes of the evaluated text).

    Unlike perplexity, this does not depend on the tokenizer: a tokenizer that packs more text
    per token scores a higher per-token loss on the same text, but the same bits per byte.
    """
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive for bits per byte; got {n_bytes}.")
    return total_nats / (math.log(2) * n_bytes)


def forgetting(loss_a_after_a: float, loss_a_after_b: float) -> float:
    """Rise of task A's loss caused by training on B: ``loss_A(after B) - loss_A(after A)``."""
    return loss_a_after_b - loss_a_after_a


def perplexity_ratio(loss_before: float, loss_after: float) -> float:
    """``ppl(after) / ppl(before) = exp(after - before)``: forgetting as a perplexity factor."""
    return perplexity(loss_after - loss_before)


def max_forgetting(loss_a_after_a: float, loss_a_during_b: Sequence[float]) -> float:
    """Largest rise of A's loss over the evaluations made during phase B (the peak may come
    before the end, when B's training later recovers some of A)."""
    if not loss_a_during_b:
        raise ValueError("loss_a_during_b is empty: phase B made no evaluation of task A.")
    return max(loss_a_during_b) - loss_a_after_a


def plasticity(loss_b_before: float, loss_b_after: float) -> float:
    """How much phase B taught: the drop of B's loss, ``loss_B(before B) - loss_B(after B)``."""
    return loss_b_before - loss_b_after


def _check_matrix(matrix: Sequence[Sequence[float]]) -> int:
    n = len(matrix)
    if n < 2 or any(len(row) != n for row in matrix):
        raise ValueError(
            "The task matrix must be square with at least 2 tasks: matrix[i][j] = loss on task j "
            f"after training on task i; got {n} rows of lengths {[len(r) for r in matrix]}."
        )
    return n


def backward_transfer(matrix: Sequence[Sequence[float]]) -> float:
    """GEM's backward transfer on losses: ``mean_{j<T} (R[T][j] - R[j][j])``.

    ``matrix[i][j]`` is the loss on task j after training on tasks 0..i (T = last row). Positive
    means the final model is worse on earlier tasks than right after learning them (forgetting).
    """
    n = _check_matrix(matrix)
    return statistics.fmean(matrix[n - 1][j] - matrix[j][j] for j in range(n - 1))


def forgetting_per_task(matrix: Sequence[Sequence[float]]) -> list[float]:
    """Per earlier task j: final loss minus the best (lowest) loss it ever had,
    ``R[T][j] - min_{i<T} R[i][j]`` (Chaudhry et al. 2018's forgetting measure, on losses)."""
    n = _check_matrix(matrix)
    return [matrix[n - 1][j] - min(matrix[i][j] for i in range(j, n - 1)) for j in range(n - 1)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for a single value) of several seeds' results."""
    if not values:
        raise ValueError("mean_std needs at least one value.")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std
