"""quadgpt.metrics on hand-made numbers."""

from __future__ import annotations

import math

import pytest

from quadgpt import metrics


def test_perplexity_and_mean_loss():
    assert metrics.perplexity(0.0) == 1.0
    assert metrics.perplexity(math.log(50.0)) == pytest.approx(50.0)
    assert metrics.perplexity(1e6) == math.inf
    assert metrics.mean_loss(6.0, 4) == 1.5
    with pytest.raises(ValueError, match="n_tokens"):
        metrics.mean_loss(1.0, 0)


def test_bits_per_byte():
    # 8 bytes that cost ln(2) nats each = 1 bit per byte; half the nats -> half a bit.
    assert metrics.bits_per_byte(8 * math.log(2), 8) == pytest.approx(1.0)
    assert metrics.bits_per_byte(4 * math.log(2), 8) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n_bytes"):
        metrics.bits_per_byte(1.0, 0)


def test_forgetting_ratio_max_and_plasticity():
    assert metrics.forgetting(3.0, 3.5) == pytest.approx(0.5)
    assert metrics.forgetting(3.0, 2.9) == pytest.approx(-0.1)  # B helped A: negative forgetting
    assert metrics.perplexity_ratio(3.0, 3.0 + math.log(2)) == pytest.approx(2.0)
    # The peak (4.2) comes mid-phase; the end (3.6) is lower.
    assert metrics.max_forgetting(3.0, [3.4, 4.2, 3.6]) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="phase B"):
        metrics.max_forgetting(3.0, [])
    assert metrics.plasticity(7.0, 4.5) == pytest.approx(2.5)


def test_backward_transfer_and_per_task_forgetting():
    # matrix[i][j]: loss on task j after training on tasks 0..i
    r = [
        [2.0, 6.0, 7.0],
        [2.5, 3.0, 6.5],
        [3.0, 3.6, 2.2],
    ]
    # BWT = mean(R[2][0] - R[0][0], R[2][1] - R[1][1]) = mean(1.0, 0.6)
    assert metrics.backward_transfer(r) == pytest.approx(0.8)
    # best ever for task 0 is 2.0 (after task 0), for task 1 it is 3.0 (after task 1)
    assert metrics.forgetting_per_task(r) == pytest.approx([1.0, 0.6])
    # Two tasks: BWT is plain forgetting of A.
    assert metrics.backward_transfer([[3.0, 8.0], [3.7, 4.0]]) == pytest.approx(0.7)
    # min over the rows after task j was learned, not before: task 0 dipped to 1.8 after task 1
    assert metrics.forgetting_per_task([[2.0, 9, 9], [1.8, 3.0, 9], [2.6, 3.1, 2.0]]) == pytest.approx([0.8, 0.1])


@pytest.mark.parametrize("bad", [[[1.0]], [[1.0, 2.0], [3.0]], []])
def test_task_matrix_must_be_square(bad):
    with pytest.raises(ValueError, match="square"):
        metrics.backward_transfer(bad)


def test_mean_std():
    assert metrics.mean_std([2.0]) == (2.0, 0.0)
    mean, std = metrics.mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
    with pytest.raises(ValueError):
        metrics.mean_std([])
