"""GPT-2 native format: ``quadgpt import-hf`` (GPT2LMHeadModel -> checkpoint) and
``quadgpt export --format gpt2`` (mlp checkpoint -> GPT2LMHeadModel), both exact in fp32."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_model_config

from quadgpt.checkpoint import load_model, save_model_checkpoint
from quadgpt.config import Config
from quadgpt.hf.export import main as export_main
from quadgpt.hf.import_gpt2 import main as import_main
from quadgpt.model import GPT

transformers = pytest.importorskip("transformers")


def random_gpt2(tmp_path, **config) -> tuple[torch.nn.Module, object]:
    """A GPT2LMHeadModel with every parameter random (biases and LayerNorms too), saved to a folder."""
    torch.manual_seed(0)
    base = dict(n_layer=2, n_head=4, n_embd=32, n_positions=48, vocab_size=300)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**base, **config})).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            param.normal_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") else 0.0, 0.1)
    folder = tmp_path / "gpt2"
    hf.save_pretrained(folder)
    return hf, folder


@pytest.mark.parametrize(
    "config",
    [{}, {"activation_function": "gelu", "n_inner": 48}, {"activation_function": "relu"}],
    ids=["gelu_new", "gelu-n_inner", "relu"],
)
def test_imported_gpt2_gives_the_same_logits(tmp_path, capsys, config):
    hf, folder = random_gpt2(tmp_path, **config)
    assert import_main([str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    model, cfg, meta = load_model(tmp_path / "ckpt")
    assert cfg.model.ffn.kind == "mlp" and meta["imported_from"] == str(folder)
    idx = torch.randint(0, 300, (2, 48))
    with torch.no_grad():
        diff = (model(idx)[0] - hf(idx).logits).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_gelu_model_exported_as_gpt2_gives_the_same_logits(tmp_path, activation, bias):
    torch.manual_seed(0)
    model = GPT(tiny_model_config("mlp", vocab_size=300, block_size=48, activation=activation, bias=bias)).eval()
    ckpt = save_model_checkpoint(tmp_path / "ckpt", model, Config(model=model.config))
    assert export_main([str(ckpt), str(tmp_path / "hf"), "--format", "gpt2"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and "auto_map" not in config
    assert not list((tmp_path / "hf").glob("*.py"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")  # no remote code
    assert type(hf).__name__ == "GPT2LMHeadModel"
    idx = torch.randint(0, 300, (2, 48))
    with torch.no_grad():
        diff = (model(idx)[0] - hf.eval()(idx).logits).abs().max().item()
    assert diff <= 1e-5
    greedy = hf.generate(idx[:1, :4], max_new_tokens=20, do_sample=False, eos_token_id=None)
    assert torch.equal(greedy, model.generate(idx[:1, :4], 20, temperature=0))


def test_import_then_export_round_trips_the_weights(tmp_path):
    from quadgpt.cli import main as cli_main

    hf, folder = random_gpt2(tmp_path)
    assert cli_main(["import-hf", str(folder), "--out", str(tmp_path / "ckpt")]) == 0
    assert export_main([str(tmp_path / "ckpt"), str(tmp_path / "back"), "--format", "gpt2"]) == 0
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back")
    ours, theirs = hf.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_import_refuses_what_quadgpt_cannot_compute(tmp_path, capsys):
    _, folder = random_gpt2(tmp_path, activation_function="gelu_fast", scale_attn_by_inverse_layer_idx=True)
    assert import_main([str(folder), "--out", str(tmp_path / "ckpt")]) == 1
    err = capsys.readouterr().err
    assert "gelu_fast" in err and "scale_attn_by_inverse_layer_idx" in err
    assert not (tmp_path / "ckpt").exists()


def test_import_of_a_missing_or_non_gpt2_folder(tmp_path, capsys):
    assert import_main([str(tmp_path / "nope"), "--out", str(tmp_path / "ckpt")]) == 1
    assert "nope" in capsys.readouterr().err
    other = tmp_path / "llama"
    transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4).save_pretrained(other)
    assert import_main([str(other), "--out", str(tmp_path / "ckpt")]) == 1
    assert "'llama' model; import-hf converts GPT-2 models" in capsys.readouterr().err


def test_import_refuses_an_untied_head(tmp_path, capsys):
    """A head of its own cannot live in quadgpt's tied model: before the fix it was replaced by
    the token embedding, silently (exit 0, logits off by ~15)."""
    _, folder = random_gpt2(tmp_path, tie_word_embeddings=False)
    assert import_main([str(folder), "--out", str(tmp_path / "ckpt")]) == 1
    assert "tie_word_embeddings = False" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_import_checks_the_converted_logits(tmp_path, capsys, monkeypatch):
    from quadgpt.hf import convert, import_gpt2

    def lossy(state, cfg):
        out = convert.from_gpt2_state(state, cfg)
        out["blocks.0.ffn.c_fc.weight"] = out["blocks.0.ffn.c_fc.weight"] * 2  # (a uniform shift would be invisible after LayerNorm)
        return out

    monkeypatch.setattr(import_gpt2, "from_gpt2_state", lossy)
    _, folder = random_gpt2(tmp_path)
    assert import_main([str(folder), "--out", str(tmp_path / "ckpt")]) == 1
    assert "logits differ" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_import_never_replaces_what_quadgpt_did_not_write(tmp_path, capsys):
    """import-hf used to replace any folder at --out, and --out could be the source itself."""
    _, folder = random_gpt2(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    for out, says in ((folder, "is the input"), (tmp_path, "contains the input"), (folder / "ckpt", "lies inside")):
        assert import_main([str(folder), "--out", str(out), "--force"]) == 2
        assert says in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert import_main([str(folder), "--out", str(mine), "--force"]) == 2
    assert "did not write" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in folder.iterdir()) == before
    ckpt = tmp_path / "ckpt"
    assert import_main([str(folder), "--out", str(ckpt)]) == 0
    assert import_main([str(folder), "--out", str(ckpt)]) == 2 and "--force" in capsys.readouterr().err
    assert import_main([str(folder), "--out", str(ckpt), "--force"]) == 0
