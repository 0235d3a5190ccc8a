import pytest
import torch

from quadgpt.sampling import filter_logits, next_token


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=None))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_k=None, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 <= 0.8
    kept = torch.isfinite(filter_logits(probs.log(), top_k=None, top_p=0.1))
    assert kept.tolist() == [[True, False, False, False]]  # the top token always stays


def test_greedy_and_bad_arguments():
    logits = torch.tensor([[0.1, 2.0, -1.0]])
    assert next_token(logits, temperature=0.0).item() == 1
    with pytest.raises(ValueError, match="temperature"):
        next_token(logits, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        next_token(logits, top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        next_token(logits, top_p=1.5)
