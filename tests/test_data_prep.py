"""data_prep: every source kind on files the test makes, decode round-trip, train/val split,
meta.json, idempotence, interruption, and every bad input the issue lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from data_prep import prepare as prepare_mod
from data_prep.prepare import PrepareError, main, prepare
from data_prep.shards import ShardWriter, VocabTooLarge, encode_batch, shard_dtype
from data_prep.sources import module_texts, open_builtin, stdlib_files
from data_prep.split import SplitError
from quadgpt import __version__
from quadgpt.data import BatchLoader, DataError, TokenDataset, load_meta
from quadgpt.safety import UnsafeOutput
from quadgpt.tokenizer import EOT_TOKEN, decode, encode

REPO = Path(__file__).resolve().parents[1]
DOCS = [f"Document number {i}: {'words ' * (i % 7)}the end.\nSecond line {i}." for i in range(40)]


def split_docs(folder: Path, *splits: str) -> list[str]:
    """The documents of the splits' streams, one after the other, decoded back from their shards
    (each document ends with EOT; a position split cuts one document between train and val)."""
    tokens = np.concatenate([TokenDataset(folder, s).read(0, len(TokenDataset(folder, s))) for s in splits])
    tokens = tokens.astype(np.int64)
    assert tokens[-1] == EOT_TOKEN
    ends = np.flatnonzero(tokens == EOT_TOKEN)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [decode(tokens[s:e].tolist()) for s, e in zip(starts, ends)]


def all_docs(folder: Path) -> list[str]:
    return split_docs(folder, "train", "val")


def leftovers(parent: Path) -> list[str]:
    """Anything a failed run left beside its output (temporary folders)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture
def txt_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS):
        (folder / ("sub" if i % 2 else "") / f"doc{i:02d}.txt").write_text(doc)
    return folder


def run(source: str | Path, out: Path, **kwargs) -> dict:
    kwargs.setdefault("num_proc", 1)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("val_count", 4)
    return prepare(str(source), out, **kwargs)


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


def test_txt_folder_round_trips_with_disjoint_splits(txt_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    meta = run(txt_dir, out, shard_tokens=50)
    train, val = split_docs(out, "train"), split_docs(out, "val")
    assert len(val) == 4 and not set(train) & set(val)
    assert sorted(train + val) == sorted(DOCS)  # one document per file, text unchanged
    assert meta["splits"]["train"]["documents"] == 36
    shards = meta["splits"]["train"]["shards"]
    assert len(shards) > 1 and all(s["tokens"] == 50 for s in shards[:-1]) and 0 < shards[-1]["tokens"] <= 50
    files = [s["file"] for split in ("train", "val") for s in meta["splits"][split]["shards"]]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", *files]
    x, y = BatchLoader(out, "train", block_size=60, batch_size=2).next_batch()  # windows span shards
    assert x.shape == (2, 60)


def test_val_split_is_deterministic_from_the_seed(txt_dir: Path, tmp_path: Path) -> None:
    run(txt_dir, tmp_path / "a", seed=1)
    run(txt_dir, tmp_path / "b", seed=1)
    run(txt_dir, tmp_path / "c", seed=2)
    assert split_docs(tmp_path / "a", "val") == split_docs(tmp_path / "b", "val")
    assert split_docs(tmp_path / "a", "val") != split_docs(tmp_path / "c", "val")


def test_a_documents_split_is_the_same_in_every_corpus_holding_it(txt_dir: Path, tmp_path: Path) -> None:
    """By fraction, val membership depends on the document alone: a sub-corpus (half the files,
    one of them duplicated) puts exactly the whole corpus's val documents among its own into val."""
    run(txt_dir, tmp_path / "all", val_count=None, val_fraction=0.3)
    val_all = set(split_docs(tmp_path / "all", "val"))
    assert 0 < len(val_all) < len(DOCS)
    (txt_dir / "sub" / "copy.txt").write_text(DOCS[1])
    run(f"{txt_dir}/sub/*.txt", tmp_path / "half", val_count=None, val_fraction=0.3)
    half_train, half_val = split_docs(tmp_path / "half", "train"), split_docs(tmp_path / "half", "val")
    assert set(half_val) == val_all & set(DOCS[1::2]) and not set(half_train) & set(half_val)
    assert (half_train + half_val).count(DOCS[1]) == 2  # both copies kept, on the same side


def test_line_docs_and_glob(txt_dir: Path, tmp_path: Path) -> None:
    run(txt_dir, tmp_path / "lines", line_docs=True)
    expected = sorted(line for doc in DOCS for line in doc.splitlines())
    assert sorted(all_docs(tmp_path / "lines")) == expected
    run(f"{txt_dir}/sub/*.txt", tmp_path / "glob", val_count=1)
    assert sorted(all_docs(tmp_path / "glob")) == sorted(DOCS[1::2])


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_record_files_with_text_field(tmp_path: Path, kind: str) -> None:
    src = tmp_path / f"data.{kind}"
    rows = [{"id": i, "body": doc} for i, doc in enumerate(DOCS)]
    if kind == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.csv
        import pyarrow.parquet

        table = pa.Table.from_pylist(rows)
        (pyarrow.parquet.write_table if kind == "parquet" else pyarrow.csv.write_csv)(table, src)
    run(src, tmp_path / "out", text_field="body")
    assert sorted(all_docs(tmp_path / "out")) == sorted(DOCS)


@pytest.fixture
def parquet_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local dataset folder that `datasets.load_dataset(path)` reads as a hub dataset would be."""
    import datasets.config
    import pyarrow as pa
    import pyarrow.parquet

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    folder = tmp_path / "hub_like" / "data"
    folder.mkdir(parents=True)
    for part in range(2):
        rows = [{"text": doc, "n": i} for i, doc in enumerate(DOCS) if i % 2 == part]
        pyarrow.parquet.write_table(pa.Table.from_pylist(rows), folder / f"train-{part:05d}-of-00002.parquet")
    return folder.parent


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_source_through_a_local_dataset(parquet_dataset: Path, tmp_path: Path, streaming: bool) -> None:
    out = tmp_path / "out"
    kwargs = {"val_count": None, "val_fraction": 0.3} if streaming else {}
    meta = run(f"hf:{parquet_dataset}", out, streaming=streaming, **kwargs)
    assert sorted(all_docs(out)) == sorted(DOCS)
    assert meta["source"]["description"].startswith(f"hf:{parquet_dataset}")
    assert 0 < meta["splits"]["val"]["documents"] < 40
    with pytest.raises(SplitError, match="--val-count needs the document count"):
        run(f"hf:{parquet_dataset}", tmp_path / "other", streaming=True)


def test_builtin_stdlib_code_and_prose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    few = [root / name for name in ("bisect.py", "colorsys.py", "fnmatch.py", "shlex.py", "this.py")]
    monkeypatch.setattr("data_prep.sources.stdlib_files", lambda: few)  # a small stdlib: same code path
    meta = run("builtin:stdlib", tmp_path / "both", val_count=3, num_proc=2)  # 2: through the process pool
    assert set(meta["domains"]) == {"code", "prose"}
    code = run("builtin:stdlib-code", tmp_path / "code", val_count=1)
    prose = run("builtin:stdlib-prose", tmp_path / "prose", val_count=None)  # the built-in default share
    assert prose["options"]["val_fraction"] == 0.05 and prose["splits"]["val"]["documents"] >= 1
    assert sorted(all_docs(tmp_path / "code")) == sorted(p.read_text() for p in few)
    assert sorted(all_docs(tmp_path / "both")) == sorted(all_docs(tmp_path / "code") + all_docs(tmp_path / "prose"))
    for domain, part in (("code", code), ("prose", prose)):
        both = meta["domains"][domain]
        alone = part["splits"]["train"]["tokens"] + part["splits"]["val"]["tokens"]
        assert both["train"]["tokens"] + both["val"]["tokens"] == alone
    from pydoc_data.topics import topics

    assert prose["splits"]["train"]["documents"] + prose["splits"]["val"]["documents"] > len(topics)
    assert open_builtin("builtin:stdlib").content_hash == meta["source"]["content_hash"]  # deterministic


def test_encode_batch_is_ordinary_encoding_plus_eot() -> None:
    texts = ["plain words", "a literal <|endoftext|> stays text", "caf\u00e9 \u2603"]
    split, tokens, domain_tokens, domain_docs = encode_batch(("gpt2", "val", [0, 1, 1], texts, 2))
    expected = [t for text in texts for t in encode(text) + [EOT_TOKEN]]
    assert split == "val" and tokens.dtype == np.uint16 and tokens.tolist() == expected
    assert (tokens == EOT_TOKEN).sum() == 3  # the literal string in a document is not a separator
    first = len(encode(texts[0])) + 1
    assert domain_docs.tolist() == [1, 2] and domain_tokens.tolist() == [first, len(tokens) - first]


def test_stdlib_selection_and_docstrings(tmp_path: Path) -> None:
    for rel in ("a.py", "pkg/b.py", "test/t.py", "pkg/tests/c.py", "site-packages/x/y.py", "test_z.py", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('"""A module docstring that is long enough to count as prose."""\n')
    assert [p.relative_to(tmp_path).as_posix() for p in stdlib_files(tmp_path)] == ["a.py", "pkg/b.py"]
    src = tmp_path / "m.py"
    src.write_text('"""Short."""\ndef f():\n    """Return the thing the caller asked for, computed lazily."""\n')
    code, prose, clean = module_texts(src)
    assert clean and code == src.read_text() and prose == "Return the thing the caller asked for, computed lazily."


# --------------------------------------------------------------------------------------
# meta.json, idempotence, interruption
# --------------------------------------------------------------------------------------


def test_meta_json_contents(txt_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    meta = run(txt_dir, out)
    assert load_meta(out) == meta
    assert (meta["tokenizer"], meta["vocab_size"], meta["dtype"], meta["eot_token"]) == ("gpt2", 50257, "uint16", 50256)
    assert meta["quadgpt_version"] == __version__ and meta["created"].endswith("Z")
    assert meta["source"]["spec"] == str(txt_dir) and len(meta["source"]["content_hash"]) == 64
    for split in ("train", "val"):
        info = meta["splits"][split]
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"]) == len(TokenDataset(out, split))
        assert info["documents"] == meta["domains"]["text"][split]["documents"]
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == len(DOCS)


def test_rerun_is_a_no_op_unless_forced_and_refuses_other_options(txt_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    meta = run(txt_dir, out)
    stamp = (out / "train_000000.bin").stat().st_mtime_ns
    assert run(txt_dir, out) == meta
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "train_000000.bin").stat().st_mtime_ns == stamp
    with pytest.raises(PrepareError, match="other settings: --seed 0 -> 5.*--force"):
        run(txt_dir, out, seed=5)
    (txt_dir / "doc00.txt").write_text("changed text")
    with pytest.raises(PrepareError, match="other content"):
        run(txt_dir, out)
    assert load_meta(out) == meta  # refusals left it alone
    forced = run(txt_dir, out, force=True)
    assert forced["fingerprint"] != meta["fingerprint"] and "changed text" in all_docs(out)
    assert leftovers(tmp_path) == []


def test_interrupted_prepare_leaves_nothing_complete_looking(txt_dir: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"

    def interrupted(self, tokens):
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(txt_dir, out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_killed_prepare_leaves_nothing_complete_looking(txt_dir: Path, tmp_path: Path) -> None:
    """A real SIGKILL in the middle of writing shards: no cleanup code runs at all."""
    out = tmp_path / "out"
    script = (
        "import os, signal, sys\n"
        "from data_prep.shards import ShardWriter\n"
        "from data_prep.prepare import main\n"
        "write = ShardWriter.write\n"
        "def write_then_die(self, tokens):\n"
        "    write(self, tokens)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "ShardWriter.write = write_then_die\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [sys.executable, "-c", script, str(txt_dir), "--out", str(out), "--num-proc", "1", "--no-progress"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -9
    assert not out.exists()  # only a hidden temporary folder, which no reader mistakes for data
    with pytest.raises(DataError, match="does not exist"):
        load_meta(out)
    run(txt_dir, out)  # the next run clears the leftover and completes
    assert sorted(all_docs(out)) == sorted(DOCS) and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------
# Bad input: one clear message, nonzero exit, nothing written
# --------------------------------------------------------------------------------------


def fails(argv: list[str], capsys, match: str) -> None:
    assert main([*argv, "--num-proc", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("quadgpt prepare: error:")]
    assert len(errors) == 1 and match in errors[0] and "Traceback" not in err, err


def test_missing_path(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "out"
    fails([str(tmp_path / "nope"), "--out", str(out)], capsys, "does not exist")
    assert not (tmp_path / "new").exists()


def test_empty_corpus(tmp_path: Path, capsys) -> None:
    src = tmp_path / "blank"
    src.mkdir()
    (src / "a.txt").write_text("  \n\n")
    (src / "b.txt").write_text("")
    fails([str(src), "--out", str(tmp_path / "out"), "--val-count", "1"], capsys, "corpus is empty")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    (src / "c.md").write_text("not a supported kind")
    fails([str(src / "*.md"), "--out", str(tmp_path / "out")], capsys, "no readable files")


def test_text_field_absent_lists_fields(tmp_path: Path, capsys) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text('{"title": "a", "body": "b"}\n{"title": "c", "body": "d"}\n')
    fails([str(src), "--out", str(tmp_path / "out")], capsys, "no field 'text'. Its fields: title, body")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_non_utf8_file_is_repaired_and_reported(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_text("plain text here")
    (src / "bad.txt").write_bytes(b"caf\xe9 au lait")
    (src / "more.txt").write_text("more plain text")
    meta = run(src, tmp_path / "out", val_count=1)
    assert "1 of 3 file(s) were not valid UTF-8" in capsys.readouterr().err
    assert meta["source"]["notes"] == ["1 of 3 file(s) were not valid UTF-8: invalid bytes replaced"]
    assert "caf\ufffd au lait" in all_docs(tmp_path / "out")


def test_vocab_too_large_for_uint16(txt_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    class BigVocab:
        n_vocab = 100_277

    with pytest.raises(VocabTooLarge):
        shard_dtype(65_537)
    assert shard_dtype(65_536) == np.uint16
    monkeypatch.setattr(prepare_mod, "get_tokenizer", lambda name: BigVocab())
    fails([str(txt_dir), "--out", str(tmp_path / "out")], capsys, "100277 token ids but uint16")
    assert not (tmp_path / "out").exists()


def test_output_folder_holding_something_else(txt_dir: Path, tmp_path: Path, capsys) -> None:
    """--force replaces only a folder quadgpt prepare wrote; the refusal names a folder that works."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for force in ([], ["--force"]):
        fails([str(txt_dir), "--out", str(out), *force], capsys, "did not write")
        assert [p.name for p in out.iterdir()] == ["precious.txt"]
    with pytest.raises(UnsafeOutput, match="did not write") as err:
        run(txt_dir, out)
    suggested = str(err.value).rsplit(" ", 1)[-1]
    assert main([str(txt_dir), "--out", suggested, "--num-proc", "1", "--no-progress"]) == 0
    (tmp_path / "file").write_text("x")
    fails([str(txt_dir), "--out", str(tmp_path / "file"), "--force"], capsys, "is a file")
    assert (tmp_path / "file").read_text() == "x"


def test_out_is_or_holds_or_lies_inside_the_source(txt_dir: Path, tmp_path: Path, capsys) -> None:
    """The issue's case: `prepare DIR --out DIR --force` deleted the corpus; also --out holding the
    source, --out inside it (files, folders, globs, symlinks). Each refusal's hint works."""
    before = sorted(p.relative_to(txt_dir).as_posix() for p in txt_dir.rglob("*"))
    (tmp_path / "link").symlink_to(txt_dir)
    cases = [
        (str(txt_dir), txt_dir, "is the input"),
        (str(txt_dir), tmp_path, "contains the input"),
        (str(txt_dir), txt_dir / "sub" / "out", "lies inside the input"),
        (str(txt_dir / "doc00.txt"), txt_dir / "doc00.txt", "is the input"),
        (str(txt_dir / "doc00.txt"), txt_dir, "contains the input"),
        (f"{txt_dir}/**/*.txt", txt_dir / "prepared", "lies inside the input"),
        (str(tmp_path / "link"), txt_dir, "is the input"),
        (str(txt_dir), tmp_path / "link", "is the input"),
    ]
    for source, out, says in cases:
        fails([source, "--out", str(out), "--force"], capsys, says)
    assert sorted(p.relative_to(txt_dir).as_posix() for p in txt_dir.rglob("*")) == before
    with pytest.raises(UnsafeOutput) as err:
        run(txt_dir, txt_dir, force=True)
    suggested = str(err.value).rsplit(" ", 1)[-1]
    assert Path(suggested) == tmp_path / "txt-prepared"
    assert main([str(txt_dir), "--out", suggested, "--val-count", "4", "--num-proc", "1", "--no-progress"]) == 0


def test_train_hint_for_raw_text_names_a_folder_that_works(txt_dir: Path, tmp_path: Path) -> None:
    """`--data.dataset=<raw text>`: the hint must not name the source itself as prepare's --out."""
    for raw in (txt_dir, txt_dir / "doc00.txt"):
        with pytest.raises(DataError) as err:
            load_meta(raw)
        command = str(err.value).split("`")[-2].split()
        assert command[:3] == ["quadgpt", "prepare", str(raw)] and command[3] == "--out"
        out = Path(command[4])
        assert out != raw and raw not in out.parents and not out.exists()
        assert main([*command[2:], "--num-proc", "1", "--no-progress"]) == 0
        assert f"--data.dataset={out}" in str(err.value)
        load_meta(out)


def test_force_replaces_its_own_dataset(txt_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(txt_dir, out)
    forced = run(txt_dir, out, seed=3, force=True)
    assert load_meta(out) == forced and forced["options"]["seed"] == 3 and leftovers(tmp_path) == []


def test_rerun_with_other_settings_names_them(txt_dir: Path, tmp_path: Path, capsys) -> None:
    """Prepared data is reused only when made with the settings asked for now; a refusal names
    each setting that differs, before reading the corpus."""
    out = tmp_path / "out"
    meta = run(txt_dir, out, seed=1)
    fails([str(txt_dir), "--out", str(out), "--seed", "2", "--val-count", "4", "--shard-tokens", "50"],
          capsys, "--seed 1 -> 2, --shard-tokens 100000000 -> 50")
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("other text entirely")
    fails([str(other), "--out", str(out), "--seed", "1", "--val-count", "4"], capsys, f"source {txt_dir} -> {other}")
    fails([str(txt_dir), "--out", str(out), "--seed", "1", "--val-fraction", "0.2"], capsys, "--val-count 4 -> none")
    assert load_meta(out) == meta


def test_bad_options(txt_dir: Path, tmp_path: Path, capsys) -> None:
    fails([str(txt_dir), "--out", str(tmp_path / "o"), "--val-fraction", "1.5"], capsys, "must be in (0, 1)")
    fails([str(txt_dir), "--out", str(tmp_path / "o"), "--val-count", "40"], capsys, "leaves none to train on")
    fails(["builtin:stdlib-poetry", "--out", str(tmp_path / "o")], capsys, "Unknown built-in corpus")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o").exists()


def test_runs_as_a_script(txt_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "data_prep" / "prepare.py"), str(txt_dir), "--out", str(out), "--num-proc", "1"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "train  all" in proc.stdout and "tokenising" in proc.stderr  # summary and progress bar
    assert sorted(all_docs(out)) == sorted(DOCS)


# --------------------------------------------------------------------------------------
# Nothing dropped silently; a one-file corpus; every path form --help accepts
# --------------------------------------------------------------------------------------

MARKERS = ["NA", "null", "None", "nan", "N/A", "NaN", "#N/A", "n/a", "NULL", ""]


def test_csv_cells_that_look_missing_are_text(tmp_path: Path, capsys) -> None:
    """pandas reads NA, null, None, nan, N/A... as missing; as documents they are text."""
    src = tmp_path / "d.csv"
    src.write_text("id,text\n" + "".join(f"{i},{m}\n" for i, m in enumerate(MARKERS)) + "99,  \n100,42\n")
    meta = run(src, tmp_path / "out", val_count=1)
    assert sorted(all_docs(tmp_path / "out")) == sorted([m for m in MARKERS if m] + ["42"])
    assert meta["documents_read"] == len(MARKERS) + 2
    assert meta["documents_dropped"] == {"missing": 0, "blank": 2}  # "" and "  "
    assert "documents read: 12, dropped 2 blank" in capsys.readouterr().out


def test_missing_values_are_counted_by_reason(tmp_path: Path, capsys) -> None:
    src = tmp_path / "d.jsonl"
    rows = [{"text": "NA"}, {"text": None}, {"other": 1}, {"text": " \n"}, {"text": "kept"}, {"text": "null"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = run(src, tmp_path / "out", val_count=1)
    assert sorted(all_docs(tmp_path / "out")) == ["NA", "kept", "null"]
    assert meta["documents_dropped"] == {"missing": 2, "blank": 1}
    assert "documents read: 6, dropped 2 missing, 1 blank" in capsys.readouterr().out


def test_one_file_corpus_is_split_by_position(tmp_path: Path, capsys) -> None:
    """The classic single input.txt: the last 10% of its tokens are val, said plainly, recorded."""
    text = "".join(f"Line {i} of the only document.\n" for i in range(200))
    (tmp_path / "input.txt").write_text(text)
    meta = run(tmp_path / "input.txt", tmp_path / "out", val_count=None)
    printed = capsys.readouterr().out
    assert "val split BY POSITION: the last 10.0% of the tokens" in printed
    assert meta["val_split"]["by"] == "position" and meta["val_split"]["val_fraction"] == 0.1
    train, val = TokenDataset(tmp_path / "out", "train"), TokenDataset(tmp_path / "out", "val")
    total = len(encode(text)) + 1
    assert len(val) == round(total * 0.1) and len(train) + len(val) == total
    stream = np.concatenate([train.read(0, len(train)), val.read(0, len(val))]).astype(np.int64)
    assert stream.tolist() == encode(text) + [EOT_TOKEN]  # train then val: the document in order
    assert meta["domains"]["text"]["val"]["tokens"] == len(val)
    again = run(tmp_path / "input.txt", tmp_path / "shards", val_count=None, val_fraction=0.25, shard_tokens=7)
    assert again["splits"]["val"]["tokens"] == round(total * 0.25)
    assert all(s["tokens"] == 7 for s in again["splits"]["train"]["shards"][:-1])
    assert split_docs(tmp_path / "shards", "val")[-1] == decode(encode(text)[-round(total * 0.25) + 1 :])


def test_too_few_documents_messages_suggest_what_works(tmp_path: Path, capsys) -> None:
    (tmp_path / "input.txt").write_text("only one document here, a few words long")
    fails([str(tmp_path / "input.txt"), "--out", str(tmp_path / "o"), "--val-count", "1"], capsys, "drop --val-count")
    assert main([str(tmp_path / "input.txt"), "--out", str(tmp_path / "o"), "--num-proc", "1", "--no-progress"]) == 0
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.txt").write_text("first document")
    (two / "b.txt").write_text("second document")
    fails([str(two), "--out", str(tmp_path / "p"), "--val-count", "2"], capsys, "lower --val-count to at most 1")


def test_small_stream_is_split_by_position(parquet_dataset: Path, tmp_path: Path, capsys) -> None:
    """Streaming, a corpus whose documents all scored train: split by position, not refused with
    a hint (--val-count) that cannot work on a stream."""
    meta = run(f"hf:{parquet_dataset}", tmp_path / "out", streaming=True, val_count=None, val_fraction=0.001)
    assert meta["val_split"]["by"] == "position" and meta["splits"]["val"]["tokens"] >= 1
    assert "BY POSITION" in capsys.readouterr().out


def test_every_path_form_help_names(tmp_path: Path, capsys) -> None:
    """File, folder (recursive, through a symlinked folder), glob (of files or of folders), ~."""
    real = tmp_path / "real"
    (real / "deep").mkdir(parents=True)
    for i, doc in enumerate(DOCS[:6]):
        (real / ("deep" if i % 2 else "") / f"d{i}.txt").write_text(doc)
    src = tmp_path / "src"
    (src / "part").mkdir(parents=True)
    (src / "part" / "own.txt").write_text(DOCS[6])
    (src / "linked").symlink_to(real)
    forms = {
        str(src): DOCS[:7],
        f"{src}/*": DOCS[:7],
        f"{src}/**/*.txt": DOCS[:7],
        str(src / "part" / "own.txt"): [DOCS[6]],
        str(real / "deep"): DOCS[1:6:2],
    }
    for i, (form, expected) in enumerate(forms.items()):
        assert main([form, "--out", str(tmp_path / f"o{i}"), "--num-proc", "1", "--no-progress"]) == 0, form
        assert sorted(all_docs(tmp_path / f"o{i}")) == sorted(expected), form


def test_home_relative_source(txt_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["~/txt", "--out", str(tmp_path / "o"), "--val-count", "1", "--num-proc", "1", "--no-progress"]) == 0
    assert sorted(all_docs(tmp_path / "o")) == sorted(DOCS)


def test_unreadable_records_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"text": "broken\n')
    fails([str(src), "--out", str(tmp_path / "o")], capsys, "Cannot read")
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("entry", [["-m", "data_prep"], [str(REPO / "data_prep" / "prepare.py")]])
def test_exit_status_of_the_entry_points(entry: list[str], txt_dir: Path, tmp_path: Path) -> None:
    """Success 0, refused input 2 with nothing touched, from every documented entry point."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, *entry]
    ok = subprocess.run([*base, str(txt_dir), "--out", str(tmp_path / "o"), "--num-proc", "1", "--no-progress"],
                        cwd=tmp_path, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*base, str(txt_dir), "--out", str(txt_dir), "--force"],
                             cwd=tmp_path, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "is the input" in refused.stderr and (txt_dir / "doc00.txt").exists()
