"""``quadgpt export``: what ``transformers`` loads from the folder must compute what quadgpt does.

For every FFN kind a tiny random model is exported and loaded back with
``AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)``, offline, in fp32."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import FFN_KINDS, tiny_model_config

from quadgpt.checkpoint import save_model_checkpoint
from quadgpt.config import Config
from quadgpt.hf import export as export_module
from quadgpt.hf.export import export, main
from quadgpt.model import GPT
from quadgpt.tokenizer import GPT2_VOCAB_SIZE, TokenizerUnavailable, get_tokenizer

transformers = pytest.importorskip("transformers")

EXPORT_FILES = {
    "config.json",
    "configuration_quadgpt.py",
    "modeling_quadgpt.py",
    "ffn_functional.py",
    "model.safetensors",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
}


def tiny_bpe_gpt(kind: str, **overrides) -> GPT:
    torch.manual_seed(0)
    cfg = tiny_model_config(kind, vocab_size=GPT2_VOCAB_SIZE, block_size=64, **overrides)
    return GPT(cfg).eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """kind -> (quadgpt model, checkpoint folder, export folder, transformers model)."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for kind in FFN_KINDS:
        model = tiny_bpe_gpt(kind)
        ckpt = save_model_checkpoint(root / kind / "ckpt", model, Config(model=model.config), {"val_loss": 3.25, "tokens": 4096})
        folder = export(ckpt, root / kind / "hf")
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        out[kind] = (model, ckpt, folder, hf)
    return out


@pytest.mark.parametrize("kind", FFN_KINDS)
def test_transformers_logits_equal_quadgpt(exports, kind):
    model, _, _, hf = exports[kind]
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 40))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind", FFN_KINDS)
def test_greedy_generate_equals_quadgpt_and_uses_the_cache(exports, kind):
    model, _, _, hf = exports[kind]
    prompt = torch.randint(0, GPT2_VOCAB_SIZE, (1, 6))
    seen = []
    hook = hf.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        theirs = hf.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None)
    finally:
        hook.remove()
    ours = model.generate(prompt, 20, temperature=0)
    assert torch.equal(theirs, ours)
    assert seen[0] == 6 and set(seen[1:]) == {1}  # prefill once, then one token per step


def returned_cache(output):
    """The cache of a forward's output, under the field name this transformers uses."""
    return output["cache"] if "cache" in output else output["past_key_values"]


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_cache_fed_in_chunks_gives_the_full_logits(exports, name):
    """Both names of the cache argument work (transformers < 5.24: past_key_values; >= 5.24:
    cache); before the fix the new name was swallowed and each chunk ran without its past."""
    _, _, _, hf = exports["kan"]
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 20))
    with torch.no_grad():
        full = hf(idx).logits
        first = hf(idx[:, :7], use_cache=True)
        second = hf(idx[:, 7:19], use_cache=True, **{name: returned_cache(first)})
        third = hf(idx[:, 19:], use_cache=True, **{name: returned_cache(second)})
    chunked = torch.cat([first.logits, second.logits, third.logits], dim=1)
    assert (chunked - full).abs().max().item() <= 1e-5


def test_arguments_that_would_change_the_result_are_refused(exports):
    _, _, _, hf = exports["mlp"]
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (1, 5))
    with pytest.raises(TypeError, match="output_attentions"):
        hf(idx, output_attentions=True)
    with pytest.raises(TypeError, match="block_tables"):
        hf(idx, block_tables=torch.zeros(1))
    with pytest.raises(ValueError, match="cache_position"):
        hf(idx, cache_position=torch.arange(3, 8))
    with torch.no_grad():  # what generate() passes as a matter of course is fine
        hf(idx, return_dict=True, output_attentions=False, output_hidden_states=None, cache_position=torch.arange(5))


def test_sampled_generation_never_yields_padding_ids(tmp_path):
    """The model's 50,304 rows include 47 that are no GPT-2 token: the export drops them, so
    even a model whose padding rows have the largest logits samples real ids only."""
    torch.manual_seed(0)
    model = GPT(tiny_model_config("mlp", vocab_size=50304, block_size=64)).eval()
    with torch.no_grad():
        model.ln_f.bias.fill_(1.0)  # every final hidden state leans towards the all-ones direction,
        model.wte.weight[GPT2_VOCAB_SIZE:] = 10.0  # which is where the padding rows point  # padding rows win every argmax
    ckpt = save_model_checkpoint(tmp_path / "ckpt", model, Config(model=model.config))
    folder = export(ckpt, tmp_path / "hf")
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == GPT2_VOCAB_SIZE
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    out = hf.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=20, do_sample=True, top_k=0, eos_token_id=None)
    assert int(out.max()) < GPT2_VOCAB_SIZE
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (1, 9))
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)[0][..., :GPT2_VOCAB_SIZE]).abs().max().item() <= 1e-5


def test_an_export_that_computes_something_else_is_refused(capsys, monkeypatch, tmp_path, exports):
    from quadgpt.hf import convert

    def broken(state):
        out = convert.to_quadgpt_hf_state(state)
        out["transformer.ln_f.weight"] = out["transformer.ln_f.weight"] * 2
        return out

    monkeypatch.setattr(export_module, "to_quadgpt_hf_state", broken)
    rc, err = run_export(capsys, str(exports["swiglu"][1]), str(tmp_path / "out"))
    assert rc == 1 and "logits differ" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_export_shares_quadgpts_ffn_source(exports):
    """The exported FFN math is quadgpt's own file, byte for byte (no second copy to drift)."""
    from pathlib import Path

    import quadgpt.ffn.functional as functional

    folder = exports["kan"][2]
    assert (folder / "ffn_functional.py").read_bytes() == Path(functional.__file__).read_bytes()


def test_left_padded_batch_generates_what_each_prompt_does_alone(exports):
    _, _, folder, hf = exports["quadratic"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, padding_side="left")
    tokenizer.pad_token = tokenizer.eos_token
    prompts = ["import os\nimport sys\n", "x ="]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = hf.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=None)
    for row, prompt in enumerate(prompts):
        alone = hf.generate(**tokenizer([prompt], return_tensors="pt"), max_new_tokens=8, do_sample=False, eos_token_id=None)
        assert out[row, -8:].tolist() == alone[0, -8:].tolist()


@pytest.mark.parametrize("kind", FFN_KINDS)
def test_pipeline_runs_on_the_export(exports, kind):
    _, _, folder, hf = exports[kind]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    generator = transformers.pipeline("text-generation", model=hf, tokenizer=tokenizer, device="cpu")
    result = generator("def main():", max_new_tokens=5, do_sample=False)
    assert result[0]["generated_text"].startswith("def main():")


def test_export_folder_contents(exports):
    model, _, folder, _ = exports["kan"]
    assert {p.name for p in folder.iterdir()} == EXPORT_FILES
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "quadgpt" and config["ffn_kind"] == "kan"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_quadgpt.QuadGPTForCausalLM"
    assert config["ffn_hidden"] == model.blocks[0].ffn.hidden
    card = (folder / "README.md").read_text()
    assert "`kan`" in card and "B-splines" in card and "3.2500" in card and "4,096 tokens" in card
    assert f"{model.num_params(non_embedding=False):,}" in card
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 50256 and generation["temperature"] == 0.8


def test_tokenizer_is_tiktokens_gpt2(exports):
    folder = exports["mlp"][2]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    text = "def f(x):\n    return x  + 1  # héllo 😀<|endoftext|>"
    assert tokenizer(text)["input_ids"] == get_tokenizer().encoding.encode(text, allowed_special="all")
    assert tokenizer.eos_token_id == 50256


def test_export_loads_without_quadgpt_or_triton(exports):
    """The copied code must be self-contained: import quadgpt or triton and this fails."""
    folder = exports["quadratic"][2]
    code = (
        "import sys; sys.modules['quadgpt'] = None; sys.modules['triton'] = None\n"
        "import torch, transformers\n"
        f"m = transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "print(tuple(m(torch.tensor([[1, 2, 3]])).logits.shape))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(f"(1, 3, {GPT2_VOCAB_SIZE})")


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def run_export(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_missing_and_half_written_checkpoints(capsys, tmp_path, exports):
    rc, err = run_export(capsys, str(tmp_path / "nope"), str(tmp_path / "out"))
    assert rc == 1 and "does not exist" in err
    half = tmp_path / "half"
    shutil.copytree(exports["mlp"][1], half)
    (half / "model.safetensors").unlink()
    rc, err = run_export(capsys, str(half), str(tmp_path / "out"))
    assert rc == 1 and "incomplete" in err and not (tmp_path / "out").exists()


def test_unknown_ffn_kind_is_refused(capsys, tmp_path, exports):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(exports["mlp"][1], ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["ffn"]["kind"] = "moe"
    (ckpt / "config.json").write_text(json.dumps(config))
    rc, err = run_export(capsys, str(ckpt), str(tmp_path / "out"))
    assert rc == 1 and "FFN kind 'moe' has no pure-PyTorch version" in err


def test_gpt2_format_of_a_non_mlp_model_says_why(capsys, tmp_path, exports):
    rc, err = run_export(capsys, str(exports["swiglu"][1]), str(tmp_path / "out"), "--format", "gpt2")
    assert rc == 1 and "GPT-2-shaped" in err and "'swiglu'" in err and "two-layer MLP" in err


def test_quadgpt_export_command_is_wired(tmp_path, exports):
    from quadgpt.cli import main as cli_main

    assert cli_main(["export", str(exports["swiglu"][1]), str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["ffn_kind"] == "swiglu"


def test_overwrite_replaces_only_an_earlier_export(capsys, tmp_path, exports):
    """--overwrite never deletes what quadgpt did not write (a case of issue 12, fault 1)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for flags in ([], ["--overwrite"]):
        rc, err = run_export(capsys, str(exports["mlp"][1]), str(out), *flags)
        assert rc == 2 and "did not write" in err and (out / "keep.txt").read_text() == "mine"
    fresh = tmp_path / "fresh"
    assert run_export(capsys, str(exports["mlp"][1]), str(fresh))[0] == 0
    rc, err = run_export(capsys, str(exports["mlp"][1]), str(fresh))
    assert rc == 2 and "--overwrite" in err
    assert run_export(capsys, str(exports["swiglu"][1]), str(fresh), "--overwrite")[0] == 0
    assert {p.name for p in fresh.iterdir()} == EXPORT_FILES
    assert json.loads((fresh / "config.json").read_text())["ffn_kind"] == "swiglu"


def test_out_is_holds_or_lies_inside_the_checkpoint(capsys, tmp_path, exports):
    ckpt = tmp_path / "run" / "ckpt"
    shutil.copytree(exports["mlp"][1], ckpt)
    (tmp_path / "link").symlink_to(ckpt)
    for out, says in ((ckpt, "is the input"), (ckpt.parent, "contains the input"),
                      (ckpt / "hf", "lies inside the input"), (tmp_path / "link", "is the input")):
        rc, err = run_export(capsys, str(ckpt), str(out), "--overwrite")
        assert rc == 2 and says in err, err
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(p.name for p in exports["mlp"][1].iterdir())
