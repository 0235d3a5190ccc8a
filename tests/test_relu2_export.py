"""The ReLU² MLP survives the Hugging Face export: transformers' logits equal quadgpt's."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model_config

from quadgpt.checkpoint import save_model_checkpoint
from quadgpt.config import Config
from quadgpt.hf.export import export
from quadgpt.model import GPT

transformers = pytest.importorskip("transformers")


def test_relu2_export_logits_equal_quadgpt(tmp_path):
    torch.manual_seed(0)
    model = GPT(tiny_model_config("mlp", activation="relu2", vocab_size=320, tokenizer="bytes")).eval()
    ckpt = save_model_checkpoint(tmp_path / "ckpt", model, Config(model=model.config))
    hf = transformers.AutoModelForCausalLM.from_pretrained(export(ckpt, tmp_path / "hf"), trust_remote_code=True).eval()
    idx = torch.randint(0, 257, (2, 12))
    with torch.no_grad():
        # the export drops the 63 padding rows of the 320-row head: the 257 real ids remain
        assert torch.allclose(hf(input_ids=idx).logits, model(idx)[0][..., :257], atol=1e-5)
