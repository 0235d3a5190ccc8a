"""Generation: the KV cache against full recomputation, context cropping, stop strings and
streaming, seeds, batches of prompts, and the ``quadgpt sample`` command and its errors."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FFN_KINDS, tiny_model_config

from quadgpt.checkpoint import save_model_checkpoint
from quadgpt.config import Config
from quadgpt.model import GPT, KVCache
from quadgpt.sample_cli import SEPARATOR, SampleSettings, TextStream, generate_texts, main, unescape
from quadgpt.sampling import filter_logits, next_token
from quadgpt.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, get_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_gpt(kind: str = "mlp", **overrides) -> GPT:
    return GPT(tiny_model_config(kind, **overrides)).eval()


# --------------------------------------------------------------------------------------
# KV cache
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("kind", FFN_KINDS)
def test_cached_greedy_equals_uncached(kind, backend):
    model = tiny_gpt(kind, attention=backend)
    prompt = torch.randint(0, 64, (2, 5))
    cached = model.generate(prompt, 20, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 20, temperature=0, use_cache=False)
    assert cached.shape == (2, 25)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("kind", FFN_KINDS)
def test_cache_steps_give_the_full_forward_logits(kind):
    """Prefill 7 tokens, then feed 3 + 1 + 1 through the cache: every position's logits match
    one full forward pass over all 12 tokens."""
    model = tiny_gpt(kind)
    idx = torch.randint(0, 64, (2, 12))
    full, _ = model(idx)
    cache = KVCache.empty(model.config, 2, 12, idx.device, torch.float32)
    pieces = [model(idx[:, a:b], cache=cache)[0] for a, b in ((0, 7), (7, 10), (10, 11), (11, 12))]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_long_prompt_keeps_its_last_tokens_with_a_warning():
    model = tiny_gpt()  # block_size 32
    prompt = torch.randint(0, 64, (1, 40))
    with pytest.warns(UserWarning, match="keeping the last 27 prompt tokens"):
        out = model.generate(prompt, 5, temperature=0)
    assert out.shape == (1, 32)
    assert torch.equal(out, model.generate(prompt[:, -27:], 5, temperature=0))


# --------------------------------------------------------------------------------------
# Decoding rules (quadgpt.sampling)
# --------------------------------------------------------------------------------------


def test_top_k_keeps_the_k_largest_logits():
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9]])
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=None))
    assert kept.tolist() == [[False, True, False, True, False]]


@pytest.mark.parametrize("top_p, kept", [(0.8, 2), (0.81, 3), (0.01, 1), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(filter_logits(logits, top_k=None, top_p=top_p)).sum().item() == kept


def test_next_token_greedy_and_seeded():
    logits = torch.randn(3, 50)
    assert torch.equal(next_token(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(next_token(logits, temperature=5.0, top_k=1), logits.argmax(-1))
    first, second = (next_token(logits, 1.0, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first, second)


# --------------------------------------------------------------------------------------
# Streaming text and stop strings
# --------------------------------------------------------------------------------------


def stream_all(tokens: list[int], stop=(), stop_token=EOT_TOKEN) -> tuple[list[str], str]:
    stream = TextStream(get_tokenizer(), stop, stop_token)
    pieces = [stream.push(t) for t in tokens] + [stream.finish()]
    return pieces, stream.text


def test_stream_pieces_add_up_to_the_decoded_text():
    tokens = get_tokenizer().encode("def f(x):\n    return x + 1\n")
    pieces, text = stream_all(tokens)
    assert "".join(pieces) == text == "def f(x):\n    return x + 1\n"
    assert sum(1 for p in pieces if p) > 3  # it really streams


def test_stream_waits_for_a_character_split_across_tokens():
    tok = get_tokenizer()
    tokens = tok.encode("a😀b")
    # the emoji's four bytes span several byte-level tokens
    assert any(not tok.token_bytes(t).decode("utf-8", errors="ignore") for t in tokens)
    pieces, text = stream_all(tokens)
    assert text == "a😀b" and "\ufffd" not in "".join(pieces)


def test_stop_string_across_token_boundaries_is_cut_and_never_emitted():
    tokens = get_tokenizer().encode("x = 1\n\n\ndef g():\n    pass\n")
    pieces, text = stream_all(tokens, stop=["\n\n\n", "never"])
    assert text == "x = 1"
    assert "".join(pieces) == "x = 1"


def test_eot_ends_a_sample_unless_disabled():
    tok = get_tokenizer()
    tokens = tok.encode("ab") + [EOT_TOKEN] + tok.encode("cd")
    assert stream_all(tokens)[1] == "ab"
    assert stream_all(tokens, stop_token=None)[1] == "ab<|endoftext|>cd"


# --------------------------------------------------------------------------------------
# generate_texts: seeds and batches
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_model() -> GPT:
    """A tiny GPT over the real GPT-2 vocabulary (the tokenizer's ids must fit)."""
    torch.manual_seed(0)
    return GPT(tiny_model_config("mlp", n_embd=16, n_head=2, block_size=64, vocab_size=GPT2_VOCAB_SIZE)).eval()


def test_same_seed_same_text_other_seed_other_text(bpe_model):
    settings = dict(num_samples=2, max_new_tokens=12, temperature=1.0, top_k=0, stop_at_eot=False)
    a = generate_texts(bpe_model, ["import os\n"], SampleSettings(seed=1, **settings))
    b = generate_texts(bpe_model, ["import os\n"], SampleSettings(seed=1, **settings))
    c = generate_texts(bpe_model, ["import os\n"], SampleSettings(seed=2, **settings))
    assert a == b and a != c
    assert a[0][0] != a[0][1]  # samples of one prompt differ


def test_batch_of_prompts_of_different_lengths_equals_one_by_one(bpe_model):
    prompts = ["import os\n", "class A:", "x"]
    settings = SampleSettings(max_new_tokens=10, temperature=0, stop_at_eot=False)
    batch = generate_texts(bpe_model, prompts, settings)
    alone = [generate_texts(bpe_model, [p], settings)[0] for p in prompts]
    assert batch == alone
    assert all(len(get_tokenizer().encode(s[0])) >= 5 for s in batch)


def test_on_text_streams_what_is_returned(bpe_model):
    got: dict[tuple[int, int], str] = {}
    texts = generate_texts(
        bpe_model,
        ["a", "bb"],
        SampleSettings(num_samples=2, max_new_tokens=6, temperature=1.0, stop_at_eot=False),
        on_text=lambda p, s, piece: got.__setitem__((p, s), got.get((p, s), "") + piece),
    )
    assert got == {(p, s): texts[p][s] for p in range(2) for s in range(2) if texts[p][s]}


@pytest.mark.parametrize(
    "settings, message",
    [
        (SampleSettings(top_p=0.0), "top_p must be in"),
        (SampleSettings(top_p=1.5), "top_p must be in"),
        (SampleSettings(temperature=-0.1), "temperature must be a finite number >= 0"),
        (SampleSettings(temperature=float("nan")), "temperature must be a finite number"),
        (SampleSettings(temperature=float("inf")), "temperature must be a finite number"),
        (SampleSettings(top_p=float("nan")), "top_p must be in"),
        (SampleSettings(max_new_tokens=64), "--max-new-tokens must be in"),
        (SampleSettings(num_samples=0), "--num-samples"),
    ],
)
def test_bad_settings_are_refused(bpe_model, settings, message):
    with pytest.raises(ValueError, match=message):
        generate_texts(bpe_model, ["x"], settings)


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bpe_model):
    path = tmp_path_factory.mktemp("run") / "best"
    return save_model_checkpoint(path, bpe_model, Config(model=bpe_model.config))


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_streams_prompt_and_greedy_text(capsys, checkpoint, bpe_model):
    rc, out, _ = run_main(capsys, str(checkpoint.parent), "--prompt", "import os\n", "--max-new-tokens", "8",
                          "--temperature", "0", "--ignore-eot")
    expected = generate_texts(bpe_model, ["import os\n"], SampleSettings(max_new_tokens=8, temperature=0, stop_at_eot=False))
    assert rc == 0
    assert out.startswith("import os\n" + expected[0][0])


def test_cli_stop_string_cuts_the_sample(capsys, checkpoint, bpe_model):
    greedy = dict(max_new_tokens=16, temperature=0, stop_at_eot=False)
    full = generate_texts(bpe_model, ["import os\n"], SampleSettings(**greedy))[0][0]
    stop = full[6:9]
    rc, out, _ = run_main(capsys, str(checkpoint), "--prompt", "import os\n", "--max-new-tokens", "16",
                          "--temperature", "0", "--ignore-eot", "--stop", stop, "--stop", "never seen")
    assert rc == 0
    assert out == "import os\n" + full[: full.find(stop)] + SEPARATOR


def test_stop_flag_escapes():
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb") == "a\tb" and unescape("héllo 😀") == "héllo 😀"


def test_cli_reads_a_batch_of_prompts_from_stdin(capsys, monkeypatch, checkpoint):
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\n\nsecond one\n"))
    rc, out, _ = run_main(
        capsys, str(checkpoint), "--prompt-file", "-", "--prompts-per-line", "--num-samples", "2", "--max-new-tokens", "4"
    )
    assert rc == 0
    assert out.count("first") == 2 and out.count("second one") == 2


def test_cli_same_seed_same_output(capsys, checkpoint):
    args = [str(checkpoint), "--prompt", "x", "--max-new-tokens", "10", "--temperature", "1.0", "--seed", "7"]
    assert run_main(capsys, *args)[1] == run_main(capsys, *args)[1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", ""], "tokenises to nothing"),
        (["--top-p", "1.5"], "top_p must be in \\(0, 1\\]"),
        (["--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "temperature must be a finite number"),
        (["--top-p", "nan"], "top_p must be in"),
        (["--max-new-tokens", "500"], "below the model's context of 64"),
    ],
)
def test_cli_bad_arguments_exit_nonzero_with_the_reason(capsys, checkpoint, extra, message):
    rc, _, err = run_main(capsys, str(checkpoint), *extra)
    assert rc != 0
    assert err.startswith("quadgpt sample: ")
    assert re.search(message, err)


def test_cli_missing_and_half_written_checkpoints(capsys, tmp_path, checkpoint):
    rc, _, err = run_main(capsys, str(tmp_path / "nope"))
    assert rc != 0 and "does not exist" in err
    half = tmp_path / "half"
    shutil.copytree(checkpoint, half)
    weights = (half / "model.safetensors").read_bytes()
    (half / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # cut off mid-write
    rc, _, err = run_main(capsys, str(half))
    assert rc != 0 and "Could not read the weights" in err
    (half / "model.safetensors").unlink()
    rc, _, err = run_main(capsys, str(half))
    assert rc != 0 and "incomplete" in err and "model.safetensors" in err


def test_sample_py_entry_point_reads_a_piped_prompt(checkpoint):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "sample.py"), str(checkpoint), "--max-new-tokens", "3"],
        input="hello",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hello")


# --------------------------------------------------------------------------------------
# Padded vocabulary, prompts that must share the context
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def padded_checkpoint(tmp_path_factory) -> Path:
    """A GPT-2-vocabulary model padded to 50,304 rows whose 47 padding rows win every draw."""
    torch.manual_seed(0)
    model = GPT(tiny_model_config("mlp", n_embd=16, n_head=2, block_size=32, vocab_size=50304)).eval()
    with torch.no_grad():
        model.ln_f.bias.fill_(1.0)  # every final hidden state leans towards the all-ones direction,
        model.wte.weight[GPT2_VOCAB_SIZE:] = 10.0  # which is where the padding rows point
    return save_model_checkpoint(tmp_path_factory.mktemp("padded") / "best", model, Config(model=model.config))


def test_generate_never_samples_padding_rows(padded_checkpoint):
    from quadgpt.checkpoint import load_model

    model, _, _ = load_model(padded_checkpoint)
    assert model.token_vocab_size == GPT2_VOCAB_SIZE
    prompt = torch.randint(0, GPT2_VOCAB_SIZE, (4, 3))
    for temperature in (0.0, 1.0, 5.0):
        out = model.generate(prompt, 20, temperature=temperature, top_k=None)
        assert int(out.max()) < GPT2_VOCAB_SIZE


def test_sample_cli_on_a_padded_model_prints_text(capsys, padded_checkpoint):
    """Before the fix a draw of id >= 50,257 ended `quadgpt sample` in a KeyError."""
    rc, out, err = run_main(capsys, str(padded_checkpoint), "--prompt", "x", "--max-new-tokens", "10", "--top-k", "0")
    assert rc == 0, err
    assert out.startswith("x") and out.endswith(SEPARATOR)


def test_default_length_leaves_room_for_the_prompt(capsys, checkpoint, bpe_model):
    """Context 64, config default 200 new tokens: before the fix 63 new tokens cropped any
    prompt to its last token while the whole prompt was printed as if continued."""
    prompt = "import os\nimport sys\nimport re\n"
    n_prompt = len(get_tokenizer().encode(prompt))
    rc, out, err = run_main(capsys, str(checkpoint), "--prompt", prompt, "--temperature", "0", "--ignore-eot")
    assert rc == 0 and "fit the context" not in err
    settings = SampleSettings(max_new_tokens=64 - n_prompt, temperature=0, stop_at_eot=False)
    assert out == prompt + generate_texts(bpe_model, [prompt], settings)[0][0] + SEPARATOR


def test_a_cropped_prompt_is_shown_as_the_model_saw_it(capsys, checkpoint):
    prompt = "one two three four five six seven eight nine ten"
    ids = get_tokenizer().encode(prompt)
    rc, out, err = run_main(capsys, str(checkpoint), "--prompt", prompt, "--max-new-tokens", "60", "--temperature", "0")
    assert rc == 0
    seen = get_tokenizer().decode(ids[-4:])  # 64 - 60 tokens fit
    assert out.startswith(seen) and not out.startswith(prompt)
    assert f"prompt 1 has {len(ids)} tokens" in err and "last 4" in err
