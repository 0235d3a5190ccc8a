"""quadgpt/parallel.py in one process: activation checkpointing and gradient clipping.
(FSDP itself runs under torchrun in test_trainer_fsdp.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_model_config

from quadgpt import parallel
from quadgpt.model import GPT


def grads_after_backward(model: GPT, x: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)  # the same dropout masks in both runs
    model(x, x)[1].backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def count_calls(fn, counts: dict[str, int], key: str):
    def counted(*args, **kwargs):
        counts[key] += 1
        return fn(*args, **kwargs)

    return counted


def test_activation_checkpointing_recomputes_blocks_with_equal_gradients():
    model = GPT(tiny_model_config("swiglu", dropout=0.1)).train()
    checkpointed = copy.deepcopy(model)
    parallel.apply_activation_checkpointing(checkpointed)
    calls = {"plain": 0, "checkpointed": 0}
    for name, gpt in (("plain", model), ("checkpointed", checkpointed)):
        ffn = gpt.blocks[0].ffn
        ffn.forward = count_calls(ffn.forward, calls, name)

    x = torch.randint(0, 64, (4, 32))
    expected, got = grads_after_backward(model, x), grads_after_backward(checkpointed, x)
    assert calls == {"plain": 1, "checkpointed": 2}  # forward, then the recompute in backward
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-7, rtol=1e-6, msg=name)
    assert checkpointed.state_dict().keys() == model.state_dict().keys()  # checkpoints keep their names


@pytest.mark.parametrize("max_norm", [0.05, 1e9])
def test_clip_grad_norm_returns_the_norm_and_clips(max_norm):
    model = GPT(tiny_model_config())
    x = torch.randint(0, 64, (2, 16))
    model(x, x)[1].backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    assert parallel.clip_grad_norm_(model, max_norm) == pytest.approx(expected)
    after = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    assert after == pytest.approx(min(expected, max_norm), rel=1e-5)


def test_fsdp_refuses_fp16():
    with pytest.raises(ValueError, match="fp16"):
        parallel.mixed_precision("cuda", "fp16")
    assert parallel.mixed_precision("cpu", "bf16") is None
