"""quadgpt.data: memory-mapped shards, the batch loader (determinism, exact resume, per-rank
partitioning), fixed validation windows and the unigram baseline.

The datasets here are written directly (no tokenizer): token i of a split's stream has value
``i % MOD``, so every window's content says exactly where it came from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from quadgpt.data import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    BatchLoader,
    DataError,
    TokenDataset,
    load_meta,
    shard_name,
    unigram_baseline_loss,
    validation_windows,
)

MOD = 50_000  # token values stay below the GPT-2 vocab


def write_dataset(
    folder: Path, split_tokens: dict[str, np.ndarray], shard_tokens: int, vocab_size: int = 50257
) -> Path:
    """A prepared-dataset folder holding ``split_tokens``, cut into shards of ``shard_tokens``."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, tokens in split_tokens.items():
        shards = []
        for i, start in enumerate(range(0, len(tokens), shard_tokens)):
            chunk = tokens[start : start + shard_tokens].astype(np.uint16)
            chunk.tofile(folder / shard_name(split, i))
            shards.append({"file": shard_name(split, i), "tokens": len(chunk)})
        splits[split] = {"tokens": len(tokens), "documents": 1, "shards": shards}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tokenizer": "gpt2",
        "vocab_size": vocab_size,
        "eot_token": 50256,
        "dtype": "uint16",
        "splits": splits,
    }
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    stream = np.arange(1000) % MOD
    return write_dataset(tmp_path / "d", {"train": stream, "val": np.arange(300) % MOD}, shard_tokens=128)


def test_dataset_reads_one_stream_across_shards(data_dir: Path) -> None:
    ds = TokenDataset(data_dir, "train")
    assert len(ds) == 1000 and ds.num_shards == 8
    np.testing.assert_array_equal(ds.read(120, 20), np.arange(120, 140))  # spans shards 0 and 1
    np.testing.assert_array_equal(ds.read(0, 1000), np.arange(1000))
    assert ds.locate(128) == (1, 0) and ds.locate(1000) == (7, 1000 - 7 * 128)
    with pytest.raises(IndexError):
        ds.read(990, 11)


def test_load_meta_and_dataset_errors(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*quadgpt prepare"):
        load_meta(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a prepared dataset"):
        TokenDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="no split 'test'.*train, val"):
        TokenDataset(data_dir, "test")
    meta = json.loads((data_dir / META_FILE).read_text())
    (data_dir / META_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataError, match="format_version 99"):
        load_meta(data_dir)
    (data_dir / META_FILE).write_text(json.dumps(meta))
    shard = data_dir / shard_name("train", 3)
    shard.write_bytes(shard.read_bytes()[:-2])  # one token short: truncated copy
    with pytest.raises(DataError, match="corrupt.*127.*says 128"):
        TokenDataset(data_dir)
    shard.unlink()
    with pytest.raises(DataError, match="missing"):
        TokenDataset(data_dir)


def test_random_batches_shapes_targets_and_determinism(data_dir: Path) -> None:
    loader = BatchLoader(data_dir, "train", block_size=16, batch_size=4, seed=3)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
    assert torch.equal(y, x + 1)  # targets are the next tokens of the same window
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # a window is contiguous, even across shards
    same = BatchLoader(data_dir, "train", block_size=16, batch_size=4, seed=3)
    other = BatchLoader(data_dir, "train", block_size=16, batch_size=4, seed=4)
    assert torch.equal(same.next_batch()[0], x)
    assert not torch.equal(other.next_batch()[0], x)
    assert not torch.equal(loader.next_batch()[0], x)  # the next step draws new windows


def test_random_windows_reach_the_last_token(data_dir: Path) -> None:
    loader = BatchLoader(data_dir, "train", block_size=16, batch_size=64, seed=0)
    last = max(int(loader.next_batch()[1].max()) for _ in range(40))
    assert last == 999  # the final window [983, 1000) is drawable, nothing past the end


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_resume_sees_the_batches_of_an_uninterrupted_run(data_dir: Path, sampling: str) -> None:
    kwargs = dict(block_size=8, batch_size=3, seed=11, sampling=sampling)
    straight = BatchLoader(data_dir, "train", **kwargs)
    expected = [straight.next_batch() for _ in range(60)]  # sequential wraps past the end (24 tokens/step)
    first = BatchLoader(data_dir, "train", **kwargs)
    for _ in range(25):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    resumed = BatchLoader(data_dir, "train", **kwargs)
    resumed.load_state_dict(state)
    for x_exp, y_exp in expected[25:]:
        x, y = resumed.next_batch()
        assert torch.equal(x, x_exp) and torch.equal(y, y_exp)


def test_state_names_shard_and_offset_and_refuses_other_geometry(data_dir: Path) -> None:
    loader = BatchLoader(data_dir, "train", block_size=10, batch_size=2, sampling="sequential")
    for _ in range(7):
        loader.next_batch()
    state = loader.state_dict()
    assert (state["position"], state["shard"], state["offset"], state["step"]) == (140, 1, 12, 7)
    for change in ({"block_size": 20}, {"batch_size": 3}, {"seed": 1}, {"sampling": "random"}):
        other = BatchLoader(data_dir, "train", **{**dict(block_size=10, batch_size=2, sampling="sequential"), **change})
        with pytest.raises(DataError, match="Cannot resume the data loader"):
            other.load_state_dict(state)


def test_sequential_walks_the_stream_in_order_and_wraps(data_dir: Path) -> None:
    loader = BatchLoader(data_dir, "train", block_size=100, batch_size=3, sampling="sequential")
    seen = [loader.next_batch()[0][:, 0].tolist() for _ in range(4)]
    assert seen[:3] == [[0, 100, 200], [300, 400, 500], [600, 700, 800]]
    assert seen[3] == [0, 100, 200] and loader.epoch == 1  # 900 + 300 + 1 > 1000 tokens: next epoch


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_ranks_are_disjoint_and_concatenate_to_the_single_process_batch(data_dir: Path, sampling: str) -> None:
    world, batch = 2, 3
    ranks = [
        BatchLoader(data_dir, "train", 8, batch, rank=r, world_size=world, seed=5, sampling=sampling)
        for r in range(world)
    ]
    single = BatchLoader(data_dir, "train", 8, world * batch, seed=5, sampling=sampling)
    for _ in range(5):
        parts = [loader.next_batch() for loader in ranks]
        x_all, y_all = single.next_batch()
        assert torch.equal(torch.cat([p[0] for p in parts]), x_all)
        assert torch.equal(torch.cat([p[1] for p in parts]), y_all)
        starts = [set(p[0][:, 0].tolist()) for p in parts]
        assert not starts[0] & starts[1]  # no window is given to both ranks
        if sampling == "sequential":
            tokens = [set(p[0].flatten().tolist()) for p in parts]
            assert not tokens[0] & tokens[1]
    assert ranks[0].state_dict() == ranks[1].state_dict()  # rank 0's saved state resumes every rank


def test_loader_argument_errors(data_dir: Path) -> None:
    with pytest.raises(DataError, match="sampling must be one of"):
        BatchLoader(data_dir, "train", 8, 2, sampling="shuffle")
    with pytest.raises(DataError, match="rank must be in"):
        BatchLoader(data_dir, "train", 8, 2, rank=2, world_size=2)
    with pytest.raises(DataError, match="block_size must be >= 1"):
        BatchLoader(data_dir, "train", 0, 2)
    with pytest.raises(DataError, match="fewer than the 1001.*smaller block_size"):
        BatchLoader(data_dir, "train", 1000, 1)
    with pytest.raises(DataError, match="fewer than the 1201 one sequential batch"):
        BatchLoader(data_dir, "train", 100, 12, sampling="sequential")


def test_validation_windows_are_fixed(data_dir: Path) -> None:
    x, y = validation_windows(data_dir, block_size=16, n_windows=10)
    assert x.shape == (10, 16) and torch.equal(y, x + 1) and int(y.max()) < 300  # drawn from val
    x2, _ = validation_windows(data_dir, block_size=16, n_windows=10)
    assert torch.equal(x, x2)
    assert not torch.equal(validation_windows(data_dir, 16, 10, seed=1)[0], x)
    with pytest.raises(DataError, match="too few for one window"):
        validation_windows(data_dir, block_size=300, n_windows=1)


def test_unigram_baseline_matches_a_hand_computation(tmp_path: Path) -> None:
    vocab = 5
    train = np.array([0, 0, 0, 1, 1, 2])  # counts 3, 2, 1, 0, 0
    val = np.array([0, 1, 3])
    folder = write_dataset(tmp_path / "u", {"train": train, "val": val}, shard_tokens=4, vocab_size=vocab)
    p = {0: 4 / 11, 1: 3 / 11, 3: 1 / 11}  # add-one smoothed: (count + 1) / (6 + 5)
    expected = -(math.log(p[0]) + math.log(p[1]) + math.log(p[3])) / 3
    assert unigram_baseline_loss(folder) == pytest.approx(expected, rel=1e-12)
