import math

import pytest
import torch
from helpers import FFN_KINDS, tiny_model_config

from quadgpt.attention import available_backends
from quadgpt.model import GPT


@pytest.mark.parametrize("kind", FFN_KINDS)
@pytest.mark.parametrize("backend", available_backends())
def test_forward_shapes_and_untrained_loss(kind, backend):
    model = GPT(tiny_model_config(kind, attention=backend, vocab_size=512))
    idx, targets = torch.randint(0, 512, (2, 3, 32))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 32, 512)
    assert abs(loss.item() - math.log(512)) < 0.05  # an untrained model knows nothing: ln(vocab)
    logits_last, no_loss = model(idx, last_only=True)
    assert logits_last.shape == (3, 1, 512) and no_loss is None
    torch.testing.assert_close(logits_last[:, 0], logits[:, -1])


def test_lm_head_is_tied_and_residual_projections_are_scaled():
    model = GPT(tiny_model_config("mlp", n_layer=8, n_embd=64, vocab_size=1024))
    assert model.lm_head.weight is model.wte.weight
    assert abs(model.blocks[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].ffn.c_proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.001


def test_sequence_longer_than_context_fails():
    model = GPT(tiny_model_config())
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("kind", FFN_KINDS)
@pytest.mark.parametrize("backend", available_backends())
def test_kv_cache_greedy_equals_uncached(kind, backend):
    torch.manual_seed(1)
    model = GPT(tiny_model_config(kind, attention=backend)).eval()
    prompt = torch.randint(0, 64, (2, 5))
    cached = model.generate(prompt, 20, temperature=0.0, use_cache=True)
    uncached = model.generate(prompt, 20, temperature=0.0, use_cache=False)
    assert cached.shape == (2, 25)
    assert torch.equal(cached, uncached)


def test_kv_cache_logits_match_full_forward():
    from quadgpt.model import KVCache

    model = GPT(tiny_model_config("quadratic")).eval()
    idx = torch.randint(0, 64, (2, 12))
    full, _ = model(idx)
    cache = KVCache.empty(model.config, 2, 12, idx.device, torch.float32)
    prefill, _ = model(idx[:, :7], cache=cache)
    steps = [model(idx[:, t : t + 1], cache=cache)[0] for t in range(7, 12)]
    torch.testing.assert_close(torch.cat([prefill] + steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_long_prompt_is_cropped_with_a_warning():
    model = GPT(tiny_model_config()).eval()
    prompt = torch.randint(0, 64, (1, 40))
    with pytest.warns(UserWarning, match="keeping the last 22 prompt tokens"):
        out = model.generate(prompt, 10, temperature=0.0)
    assert out.shape == (1, 32) and torch.equal(out[:, :22], prompt[:, -22:])


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = GPT(tiny_model_config()).eval()
    prompt = torch.randint(0, 64, (1, 4))
    a = model.generate(prompt, 15, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 15, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
