"""Small model configs shared by tests."""

from __future__ import annotations

import dataclasses

from quadgpt.config import FFNConfig, ModelConfig

FFN_KINDS = ("mlp", "swiglu", "quadratic", "kan")


def tiny_model_config(kind: str = "mlp", **overrides) -> ModelConfig:
    """A 2-layer, width-32 GPT over a 64-token vocabulary: milliseconds per step on a CPU."""
    ffn_fields = {f.name for f in dataclasses.fields(FFNConfig)}
    ffn_over = {k: v for k, v in overrides.items() if k in ffn_fields}
    model_over = {k: v for k, v in overrides.items() if k not in ffn_fields}
    base = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=64, bias=True)
    base.update(model_over)
    return ModelConfig(**base, ffn=FFNConfig(kind=kind, **ffn_over))
