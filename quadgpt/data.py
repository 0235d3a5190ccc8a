"""Token shards on disk and the loader that feeds them to training.

A prepared dataset (see ``quadgpt prepare``) is a folder holding ``meta.json`` and, per split,
shards ``{split}_{i:06d}.bin`` of raw token ids (uint16 for GPT-2) with documents separated by
EOT. A split is read as one stream: the concatenation of its shards in order, memory-mapped so
that a corpus larger than RAM costs no RAM.

The loader's position is part of a run's checkpoint. Random windows are drawn from a generator
seeded by ``(seed, step)``, so the whole state is two integers and a resumed run draws exactly
the windows an uninterrupted run would have. Every rank draws the same *global* batch and takes
its slice: ranks see disjoint windows, and one process with batch ``W*B`` sees exactly the
concatenation of ``W`` ranks' batches of ``B``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

META_FILE = "meta.json"
FORMAT_NAME = "quadgpt-tokens"
FORMAT_VERSION = 1
SAMPLING_MODES = ("random", "sequential")


class DataError(ValueError):
    """A dataset folder, split or loader argument that cannot be used; the message says why."""


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split`` (shared by the writer and the reader)."""
    return f"{split}_{index:06d}.bin"


def is_prepared_dataset(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``meta.json`` that ``quadgpt prepare`` wrote (any format version):
    the mark that lets ``prepare --force`` replace it."""
    try:
        meta = json.loads((Path(folder) / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


def _prepare_hint(raw: Path) -> str:
    """How to prepare the raw text at ``raw``: into a new folder beside it, never into itself."""
    from .safety import free_sibling

    out = free_sibling(raw, "prepared")
    return f"`quadgpt prepare {raw} --out {out}`, then train with --data.dataset={out}"


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a prepared dataset, checked to be one this version can read.
    Raises ``DataError`` saying how to make one (naming an output folder that would work)."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise DataError(f"'{data_dir}' is a file, not a prepared dataset folder. Prepare it: {_prepare_hint(data_dir)}.")
    if not data_dir.is_dir():
        raise DataError(
            f"Dataset folder '{data_dir}' does not exist. Prepare one first, e.g. "
            f"`quadgpt prepare builtin:stdlib --out {data_dir}`."
        )
    path = data_dir / META_FILE
    if not path.is_file():
        raise DataError(
            f"'{data_dir}' is not a prepared dataset: it has no {META_FILE}. Point at a folder written "
            f"by `quadgpt prepare`; if it holds raw text, prepare it: {_prepare_hint(data_dir)}."
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-run `quadgpt prepare ... --force`.") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DataError(f"{path} is not a quadgpt token-shard description (no \"format\": \"{FORMAT_NAME}\").")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path} has format_version {meta.get('format_version')!r}; this quadgpt reads version "
            f"{FORMAT_VERSION}. Re-prepare the data with this version (`quadgpt prepare ... --force`)."
        )
    return meta


class TokenDataset:
    """The token stream of one split: its shards memory-mapped and read as one array."""

    def __init__(self, data_dir: str | Path, split: str = "train") -> None:
        self.data_dir = Path(data_dir)
        self.split = split
        self.meta = load_meta(self.data_dir)
        splits = self.meta["splits"]
        if split not in splits:
            raise DataError(f"'{self.data_dir}' has no split '{split}'; it has: {', '.join(sorted(splits))}.")
        self.dtype = np.dtype(self.meta["dtype"])
        self._shards: list[np.memmap] = []
        for entry in splits[split]["shards"]:
            path = self.data_dir / entry["file"]
            if not path.is_file():
                raise DataError(
                    f"Shard '{path}' listed in {META_FILE} is missing; re-run `quadgpt prepare ... --force`."
                )
            n_tokens = path.stat().st_size / self.dtype.itemsize
            if n_tokens != entry["tokens"]:
                raise DataError(
                    f"Shard '{path}' is corrupt: it holds {n_tokens:g} {self.dtype.name} tokens but {META_FILE} "
                    f"says {entry['tokens']}. Re-run `quadgpt prepare ... --force`."
                )
            if n_tokens:  # numpy cannot map an empty file; an empty shard adds nothing to the stream
                self._shards.append(np.memmap(path, dtype=self.dtype, mode="r"))
        sizes = [len(s) for s in self._shards]
        # _starts[i] = global index of shard i's first token; _starts[-1] = total tokens
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        if len(self) == 0:
            raise DataError(f"Split '{split}' of '{self.data_dir}' holds no tokens.")

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def locate(self, position: int) -> tuple[int, int]:
        """(shard index, offset inside it) of global token ``position``."""
        shard = int(np.searchsorted(self._starts, position, side="right")) - 1
        shard = min(shard, self.num_shards - 1)  # position == len(self) maps to the last shard's end
        return shard, int(position - self._starts[shard])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` of the split's stream, across shard boundaries."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"tokens [{start}, {start + length}) outside split '{self.split}' of {len(self)} tokens")
        shard, offset = self.locate(start)
        pieces = []
        while length > 0:
            take = min(length, len(self._shards[shard]) - offset)
            pieces.append(self._shards[shard][offset : offset + take])
            length -= take
            shard, offset = shard + 1, 0
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each token id occurs in the split, shard by shard (no full copy in RAM)."""
        counts = np.zeros(vocab_size, dtype=np.int64)
        for shard in self._shards:
            counts += np.bincount(shard, minlength=vocab_size)[:vocab_size]
        return counts

    def windows(self, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets (int64 ``[len(starts), block_size]``) of the windows at ``starts``."""
        rows = np.stack([self.read(int(s), block_size + 1) for s in starts]).astype(np.int64)
        tokens = torch.from_numpy(rows)
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def _window_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of one step's window starts: a pure function of (seed, step), hence resumable."""
    return np.random.default_rng([seed, step])


class BatchLoader:
    """Training batches of one rank: ``x, y`` int64 ``[batch_size, block_size]`` on CPU.

    ``sampling="random"``: each step draws ``world_size * batch_size`` window starts uniformly
    over the split (nanoGPT style; windows may span documents and shards); rank ``r`` keeps
    draws ``[r*B, (r+1)*B)``. ``sampling="sequential"``: the global batch is the next
    ``world_size * batch_size`` consecutive windows of the stream, sliced the same way; at the
    end of the stream the position wraps to 0 and ``epoch`` counts up.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        block_size: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        sampling: str = "random",
    ) -> None:
        if sampling not in SAMPLING_MODES:
            raise DataError(f"sampling must be one of {', '.join(SAMPLING_MODES)}; got {sampling!r}.")
        for name, value in (("block_size", block_size), ("batch_size", batch_size), ("world_size", world_size)):
            if value < 1:
                raise DataError(f"{name} must be >= 1; got {value}.")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, world_size={world_size}); got {rank}.")
        self.dataset = TokenDataset(data_dir, split)
        self.block_size, self.batch_size = block_size, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.sampling = seed, sampling
        self.global_batch = world_size * batch_size
        needed = block_size + 1 if sampling == "random" else self.global_batch * block_size + 1
        if len(self.dataset) < needed:
            raise DataError(
                f"Split '{split}' of '{data_dir}' has {len(self.dataset)} tokens, fewer than the {needed} one "
                f"{sampling} batch needs (block_size={block_size}, batch_size={batch_size}, world_size={world_size}). "
                "Use a smaller block_size or batch_size, or more data."
            )
        self.step = 0  # batches drawn so far
        self.position = 0  # sequential: global token index where the next global batch starts
        self.epoch = 0  # sequential: completed passes over the stream

    def _global_starts(self) -> np.ndarray:
        if self.sampling == "random":
            high = len(self.dataset) - self.block_size  # last valid start is len - block_size - 1
            return _window_rng(self.seed, self.step).integers(0, high, size=self.global_batch, dtype=np.int64)
        span = self.global_batch * self.block_size
        if self.position + span + 1 > len(self.dataset):
            self.position, self.epoch = 0, self.epoch + 1
        starts = self.position + self.block_size * np.arange(self.global_batch, dtype=np.int64)
        self.position += span
        return starts

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self._global_starts()[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        self.step += 1
        return self.dataset.windows(starts, self.block_size)

    def state_dict(self) -> dict[str, Any]:
        """Plain ints and strings (JSON-ready). Identical on every rank, so rank 0's copy resumes all."""
        shard, offset = self.dataset.locate(self.position)
        return {
            "split": self.dataset.split,
            "sampling": self.sampling,
            "seed": self.seed,
            "step": self.step,
            "position": self.position,
            "shard": shard,
            "offset": offset,
            "epoch": self.epoch,
            "block_size": self.block_size,
            "global_batch": self.global_batch,
            "split_tokens": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; refuse one from different data or batch geometry (it would not be exact)."""
        mine = self.state_dict()
        for key in ("split", "sampling", "seed", "block_size", "global_batch", "split_tokens"):
            if state.get(key) != mine[key]:
                raise DataError(
                    f"Cannot resume the data loader: saved {key}={state.get(key)!r} but this run has {mine[key]!r}. "
                    "Resume with the same dataset, sampling, seed, block_size and world_size*batch_size."
                )
        self.step, self.position, self.epoch = int(state["step"]), int(state["position"]), int(state["epoch"])


def validation_windows(
    data_dir: str | Path, block_size: int, n_windows: int, split: str = "val", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of ``n_windows`` (x, y) windows of ``split``: the same for every run on this data
    and seed, so that val losses of different runs (FFN kinds, seeds) are comparable."""
    if n_windows < 1 or block_size < 1:
        raise DataError(f"n_windows and block_size must be >= 1; got {n_windows} and {block_size}.")
    dataset = TokenDataset(data_dir, split)
    if len(dataset) < block_size + 1:
        raise DataError(
            f"Split '{split}' of '{data_dir}' has {len(dataset)} tokens, too few for one window of "
            f"block_size={block_size}. Use a smaller block_size or a larger validation split."
        )
    rng = np.random.default_rng([seed, 0x5EA1])  # a stream of its own, apart from the training draws
    starts = np.sort(rng.integers(0, len(dataset) - block_size, size=n_windows, dtype=np.int64))
    return dataset.windows(starts, block_size)


def unigram_baseline_loss(data_dir: str | Path) -> float:
    """Cross-entropy (nats/token) on the val split of the train split's add-one-smoothed unigram
    distribution: the loss a model that ignores context would reach, a floor to beat."""
    meta = load_meta(data_dir)
    vocab = int(meta["vocab_size"])
    train = TokenDataset(data_dir, "train").token_counts(vocab)
    val = TokenDataset(data_dir, "val").token_counts(vocab)
    log_p = np.log(train + 1.0) - math.log(train.sum() + vocab)
    return float(-(val * log_p).sum() / val.sum())


def check_model_fits_data(model_cfg: Any, data_dir: str | Path) -> None:
    """Refuse (DataError) a dataset whose tokens the model cannot read: prepared with another
    tokenizer than ``model.tokenizer``, or with more token ids than ``model.vocab_size``.

    Datasets written without a ``tokenizer`` field (hand-made test data) are checked on size only.
    """
    from .tokenizer import padded_vocab_size

    meta = load_meta(data_dir)
    name = meta.get("tokenizer")
    if name is not None and name != model_cfg.tokenizer:
        raise DataError(
            f"'{data_dir}' was prepared with the '{name}' tokenizer but the model is configured for "
            f"'{model_cfg.tokenizer}' (model.tokenizer). Set --model.tokenizer={name} with a matching "
            f"--model.vocab_size (e.g. {padded_vocab_size(int(meta['vocab_size']))}), or prepare the data with "
            f"--tokenizer {model_cfg.tokenizer}."
        )
    vocab = int(meta["vocab_size"])
    if model_cfg.vocab_size < vocab:
        raise DataError(
            f"'{data_dir}' holds token ids up to {vocab - 1} but model.vocab_size is {model_cfg.vocab_size}: "
            f"set --model.vocab_size={padded_vocab_size(vocab)} (its {vocab} ids padded to a multiple of 64)."
        )
