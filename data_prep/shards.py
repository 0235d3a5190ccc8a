"""Tokenising documents in worker processes and writing them as fixed-size token shards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from quadgpt.data import shard_name
from quadgpt.tokenizer import get_tokenizer


class VocabTooLarge(ValueError):
    """The tokenizer's ids do not fit the shard dtype."""


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16, the dtype every quadgpt shard uses; refuses a vocabulary whose ids would overflow it."""
    dtype = np.dtype(np.uint16)
    if vocab_size > np.iinfo(dtype).max + 1:
        raise VocabTooLarge(
            f"The tokenizer has {vocab_size} token ids but {dtype.name} shards hold ids below "
            f"{np.iinfo(dtype).max + 1}. Use a tokenizer with at most that many (GPT-2's has 50257)."
        )
    return dtype


def encode_batch(task: tuple[str, str, list[int], list[str], int]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Tokenise one batch of documents of one split (run in a worker process).

    ``task`` = (tokenizer name, split, domain ids, texts, number of domains). Returns the split,
    the documents' tokens each followed by the tokenizer's EOT as one uint16 array, and tokens and documents
    per domain. One array per batch keeps the pickling between processes cheap.
    """
    name, split, domains, texts, n_domains = task
    tokenizer = get_tokenizer(name)
    eot = np.array([tokenizer.eot_id], dtype=np.uint32)
    pieces = []
    for text in texts:  # special tokens in the text are plain text; numpy avoids a Python list
        pieces += [tokenizer.encode_to_numpy(text), eot]
    lengths = np.array([len(ids) + 1 for ids in pieces[::2]], dtype=np.int64)
    tokens = np.concatenate(pieces).astype(np.uint16)  # ids < 2**16: prepare checked the vocabulary size
    domain_ids = np.asarray(domains, dtype=np.int64)
    return (
        split,
        tokens,
        np.bincount(domain_ids, weights=lengths, minlength=n_domains).astype(np.int64),
        np.bincount(domain_ids, minlength=n_domains).astype(np.int64),
    )


class ShardWriter:
    """Appends a split's token stream to ``{split}_{i:06d}.bin`` files of ``shard_tokens`` tokens
    each (the last one shorter); documents may span two shards, the loader reads across."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, dtype: np.dtype) -> None:
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1; got {shard_tokens}.")
        self.folder, self.split, self.shard_tokens, self.dtype = folder, split, shard_tokens, dtype
        self.shards: list[dict[str, int | str]] = []  # {"file", "tokens"} as meta.json lists them
        self._handle = None

    def write(self, tokens: np.ndarray) -> None:
        tokens = tokens.astype(self.dtype, copy=False)
        while len(tokens):
            if self._handle is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - int(self.shards[-1]["tokens"])
            chunk, tokens = tokens[:room], tokens[room:]
            self._handle.write(chunk.tobytes())
            self.shards[-1]["tokens"] = int(self.shards[-1]["tokens"]) + len(chunk)

    def _open_next(self) -> None:
        self.close()
        name = shard_name(self.split, len(self.shards))
        self._handle = open(self.folder / name, "wb")
        self.shards.append({"file": name, "tokens": 0})

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @property
    def tokens(self) -> int:
        return sum(int(s["tokens"]) for s in self.shards)


def move_tail(train: ShardWriter, val: ShardWriter, n: int) -> None:
    """Move the last ``n`` tokens of ``train``'s closed shards to the end of ``val`` (in order),
    truncating or removing train's shard files; both writers' shard lists stay exact."""
    if not 0 < n < train.tokens:
        raise ValueError(f"n must be in (0, {train.tokens}); got {n}.")
    pieces, left = [], n
    while left:
        last = train.shards[-1]
        path = train.folder / str(last["file"])
        take = min(left, int(last["tokens"]))
        keep = int(last["tokens"]) - take
        pieces.append(np.fromfile(path, dtype=train.dtype, offset=keep * train.dtype.itemsize))
        if keep:
            os.truncate(path, keep * train.dtype.itemsize)
            last["tokens"] = keep
        else:  # a shard file prepare itself wrote into its own temporary folder
            path.unlink()
            train.shards.pop()
        left -= take
    val.write(np.concatenate(pieces[::-1]))
    val.close()
