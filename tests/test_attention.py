import pytest
import torch

from quadgpt import attention
from quadgpt.attention import available_backends, causal_attention, check_backend


def _qkv(t_q, t_k, dtype=torch.float32):
    q = torch.randn(2, 3, t_q, 16, dtype=dtype)
    k, v = torch.randn(2, 2, 3, t_k, 16, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("backend", available_backends() + ["auto"])
@pytest.mark.parametrize("t_q, t_k", [(17, 17), (1, 9), (5, 12)])  # full, decode step, cached block
def test_backends_agree_with_math(backend, t_q, t_k):
    q, k, v = _qkv(t_q, t_k)
    ref = causal_attention(q, k, v, backend="math")
    torch.testing.assert_close(causal_attention(q, k, v, backend=backend), ref, rtol=1e-5, atol=1e-5)


def test_math_backend_is_causal():
    """Changing a future key/value must not change earlier outputs."""
    q, k, v = _qkv(8, 8)
    out = causal_attention(q, k, v, backend="math")
    k2, v2 = k.clone(), v.clone()
    k2[..., 5:, :] += 1.0
    v2[..., 5:, :] -= 1.0
    out2 = causal_attention(q, k2, v2, backend="math")
    torch.testing.assert_close(out[..., :5, :], out2[..., :5, :])
    assert not torch.allclose(out[..., 5:, :], out2[..., 5:, :])


def test_cached_block_equals_rows_of_full_attention():
    q, k, v = _qkv(12, 12)
    full = causal_attention(q, k, v, backend="math")
    tail = causal_attention(q[..., 7:, :], k, v, backend="sdpa")
    torch.testing.assert_close(tail, full[..., 7:, :], rtol=1e-5, atol=1e-5)


def test_flash_attn_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: False)
    with pytest.raises(RuntimeError, match="flash-attn package is not installed"):
        check_backend("flash_attn")
    with pytest.raises(ValueError, match="Unknown attention backend"):
        check_backend("xformers")
