"""The byte-level tokenizer through every path: registry, prepare, the train-time vocabulary
check, the checkpoint's record of it, streaming samples, bits per byte and the HF export."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from data_prep.prepare import main as prepare_main
from data_prep.shards import encode_batch
from quadgpt.data import TokenDataset, load_meta
from quadgpt.tokenizer import BYTES_EOT, TOKENIZERS, get_tokenizer, padded_vocab_size
from quadgpt.trainer import main as train_main

FEW_MODULES = ("bisect.py", "colorsys.py", "fnmatch.py", "shlex.py", "this.py")
BYTES_VOCAB = 320


def random_text(rng: random.Random, n: int = 400) -> str:
    """Text mixing ASCII, Latin accents, CJK, emoji (4-byte UTF-8), newlines and tabs."""
    pools = ["abc xyz\n\t", "éüßç", "漢字かな한글", "😀🚀🧠", "€£¥", "\r\n  "]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def test_registry_and_round_trip():
    tok = get_tokenizer("bytes")
    assert (tok.n_vocab, tok.eot_id, padded_vocab_size(tok.n_vocab)) == (257, BYTES_EOT, BYTES_VOCAB)
    assert padded_vocab_size(get_tokenizer("gpt2").n_vocab) == 50304
    assert set(TOKENIZERS) >= {"gpt2", "bytes"}
    rng = random.Random(0)
    for _ in range(20):
        text = random_text(rng)
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8")) and tok.decode(ids) == text
        assert tok.encode_to_numpy(text).tolist() == ids
    assert tok.encode("<|endoftext|>") == list(b"<|endoftext|>")  # special text stays text
    assert tok.token_bytes(BYTES_EOT) == b"<|endoftext|>" and tok.token_bytes(0xE2) == b"\xe2"
    with pytest.raises(ValueError, match="Unknown tokenizer 'bpe'.*gpt2, bytes"):
        get_tokenizer("bpe")


def test_encode_batch_with_bytes():
    texts = ["caf\u00e9", "\U0001f600"]
    split, tokens, domain_tokens, _ = encode_batch(("bytes", "train", [0, 0], texts, 1))
    assert tokens.tolist() == list("café".encode()) + [256] + list("😀".encode()) + [256]
    assert domain_tokens.tolist() == [len(tokens)]


def prepare_few_modules(out: Path, tokenizer: str) -> Path:
    """builtin:stdlib prepared by the CLI from a few stdlib modules (the same code path, fast)."""
    mp = pytest.MonkeyPatch()
    root = Path(sysconfig.get_paths()["stdlib"])
    mp.setattr("data_prep.sources.stdlib_files", lambda: [root / n for n in FEW_MODULES])
    try:
        assert prepare_main(["builtin:stdlib", "--tokenizer", tokenizer, "--out", str(out), "--val-count", "2",
                             "--num-proc", "1", "--no-progress"]) == 0
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory) -> Path:
    return prepare_few_modules(tmp_path_factory.mktemp("data") / "stdlib-bytes", "bytes")


def test_prepare_records_the_byte_tokenizer(byte_data: Path):
    meta = load_meta(byte_data)
    assert (meta["tokenizer"], meta["vocab_size"], meta["eot_token"], meta["dtype"]) == ("bytes", 257, 256, "uint16")
    tokens = np.concatenate([TokenDataset(byte_data, s).read(0, len(TokenDataset(byte_data, s))) for s in ("train", "val")])
    assert tokens.max() == 256 and (tokens == 256).sum() == sum(meta["splits"][s]["documents"] for s in ("train", "val"))
    docs = bytes(tokens[tokens != 256].astype(np.uint8)).decode("utf-8")
    root = Path(sysconfig.get_paths()["stdlib"])
    assert (root / "bisect.py").read_text() in docs


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=32", "--model.block_size=32",
        f"--data.dataset={data}", "--data.val_windows=4", f"--train.out_dir={out}", "--train.device=cpu",
        "--train.batch_size=4", "--train.max_steps=4", "--train.warmup_steps=1", "--train.eval_interval=2",
        "--train.log_interval=2", "--train.ckpt_interval=4", *extra,
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "prepared with the 'bytes' tokenizer but the model is configured for 'gpt2'"),
        (["--model.tokenizer=bytes", "--model.vocab_size=256"], "--model.vocab_size=320"),
    ],
)
def test_train_refuses_a_model_that_cannot_read_the_data(byte_data, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert train_main(train_args(byte_data, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before anything was created


def test_train_refuses_bpe_data_for_a_byte_model(tmp_path, capsys):
    bpe = prepare_few_modules(tmp_path / "stdlib-gpt2", "gpt2")
    out = tmp_path / "run"
    assert train_main(train_args(bpe, out, "--model.tokenizer=bytes", f"--model.vocab_size={BYTES_VOCAB}")) == 2
    assert "prepared with the 'gpt2' tokenizer but the model is configured for 'bytes'" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def byte_run(byte_data, tmp_path_factory) -> Path:
    """A byte-level model trained a few steps on the byte data."""
    out = tmp_path_factory.mktemp("runs") / "bytes"
    assert train_main(train_args(byte_data, out, "--model.tokenizer=bytes", f"--model.vocab_size={BYTES_VOCAB}")) == 0
    return out


def test_checkpoint_records_the_tokenizer(byte_run):
    from quadgpt.checkpoint import load_model

    _, config, meta = load_model(byte_run / "last")
    assert meta["tokenizer"] == config.model.tokenizer == "bytes"


def test_stream_keeps_multibyte_characters_whole():
    from quadgpt.sample_cli import TextStream

    tok = get_tokenizer("bytes")
    text = "é€😀 naïve 漢字\n"
    stream = TextStream(tok, stop=(), stop_token=tok.eot_id)
    pieces = [stream.push(t) for t in tok.encode(text) + [tok.eot_id]]
    assert "".join(pieces) == text and stream.done
    assert all("\ufffd" not in p for p in pieces)
    # a 4-byte emoji shows nothing until its last byte, then the whole character
    assert pieces[5:9] == ["", "", "", "😀"]


def test_byte_model_samples_and_scores_bits_per_byte(byte_run, byte_data, tmp_path, capsys):
    import json
    import math

    from eval.cli import main as eval_main
    from quadgpt.sample_cli import main as sample_main

    assert sample_main([str(byte_run), "--prompt", "é", "--max-new-tokens", "20", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("é")
    out = tmp_path / "ppl.json"
    assert eval_main(["ppl", str(byte_run), "--data", str(byte_data), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    val = TokenDataset(byte_data, "val")
    targets = val.read(1, len(val) - 1)
    assert result["tokens"] == len(targets) and result["bytes"] == int((targets != BYTES_EOT).sum())
    total_nats = result["loss"] * result["tokens"]
    assert result["bits_per_byte"] == pytest.approx(total_nats / (math.log(2) * result["bytes"]), rel=1e-12)


def test_export_ships_a_byte_tokenizer_that_round_trips(byte_run, byte_data, tmp_path, monkeypatch):
    import json

    import transformers

    from eval.cli import main as eval_main
    from quadgpt.hf.export import export

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = export(byte_run, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ours = get_tokenizer("bytes")
    rng = random.Random(1)
    for _ in range(20):
        text = random_text(rng)
        ids = hf_tok(text)["input_ids"]
        assert ids == ours.encode(text)
        assert hf_tok.decode(ids) == text
    assert hf_tok.eos_token_id == ours.eot_id == 256
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 256
    scores = []
    for model in (byte_run / "last", out):  # the export counts bytes as the checkpoint does
        path = tmp_path / f"{len(scores)}.json"
        assert eval_main(["ppl", str(model), "--data", str(byte_data), "--windows", "4", "--json", str(path)]) == 0
        scores.append(json.loads(path.read_text()))
    assert scores[0]["bytes"] == scores[1]["bytes"]
    # The export has no padding rows (ids 257..319), so its softmax spreads no mass on them: an
    # untrained model's padding mass is large, a trained one's negligible, and dropping it can
    # only lower the loss of real bytes.
    assert scores[1]["bits_per_byte"] <= scores[0]["bits_per_byte"]
