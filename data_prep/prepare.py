"""``quadgpt prepare SOURCE --out DIR``: tokenise a corpus into token shards (GPT-2 BPE or bytes).

SOURCE is ``builtin:stdlib`` (or ``builtin:stdlib-code`` / ``builtin:stdlib-prose``), a local
file, folder or glob of .txt/.jsonl/.json/.parquet/.csv, or ``hf:NAME`` (a Hugging Face dataset).
DIR receives ``train_*.bin``/``val_*.bin`` (uint16 ids, each document followed by EOT) and
``meta.json``. The folder is written under a temporary name and renamed once complete, so a
killed run never leaves a complete-looking folder; re-running with the same source and options
is a no-op unless ``--force``. Validation documents are picked by a hash of their text and
``--seed``, so a document is on the same side in every corpus that holds it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data_prep/prepare.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm import tqdm

from data_prep.shards import ShardWriter, VocabTooLarge, encode_batch, move_tail, shard_dtype
from data_prep.sources import (
    BUILDERS, BUILTIN_DOMAINS, Corpus, SourceError, local_files, open_builtin, open_hf, open_local, source_inputs,
)
from data_prep.split import DROP_REASONS, SplitError, non_empty, val_score, val_threshold
from quadgpt import __version__
from quadgpt.atomic import commit_tmp_folder, prepare_tmp_folder
from quadgpt.data import FORMAT_NAME, FORMAT_VERSION, META_FILE, DataError, is_prepared_dataset, load_meta
from quadgpt.safety import UnsafeOutput, check_output_path, existing_output
from quadgpt.tokenizer import TOKENIZERS, TokenizerUnavailable, get_tokenizer

SPLITS = ("train", "val")
BATCH_CHARS = 1 << 18  # text per worker task: big enough to amortise pickling, small enough to balance
DEFAULT_VAL_FRACTION = 0.005  # of documents, as nanoGPT: plenty for corpora of millions of documents
# The built-in corpus has ~1,400 documents: 0.5% of them would be ~7, by chance none of them prose.
BUILTIN_VAL_FRACTION = 0.05
# A corpus too small to split by document (one document, or a stream whose val came out empty)
# is split by position instead: the tail share of its tokens, nanoGPT's shakespeare_char 90/10.
POSITION_VAL_FRACTION = 0.1
# Settings that older versions did not record, and the value that reproduces what they did:
# an old dataset is reused when the new settings leave these at that value.
UNRECORDED_SETTINGS = {"position_val_fraction": POSITION_VAL_FRACTION, "csv_cells": None}


class PrepareError(ValueError):
    """Options or an output folder that prepare refuses; the message says what to change."""


def _fingerprint(corpus: Corpus, options: dict[str, Any]) -> str:
    payload = {"content": corpus.content_hash, "options": options, "format_version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _existing_meta(out: Path) -> dict[str, Any] | None:
    """The meta.json of a dataset quadgpt prepared at ``out``; None if ``out`` is absent or empty.
    Refuses a file or a folder holding anything else (``UnsafeOutput``)."""
    if not existing_output(out, is_prepared_dataset, "quadgpt prepare"):
        return None
    return json.loads((out / META_FILE).read_text())


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def settings_differences(meta: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    """``"--seed 1 -> 2"`` for each option of ``opts`` that the dataset ``meta`` was prepared
    without (options it did not record count as ``UNRECORDED_SETTINGS``)."""
    if meta.get("format_version") != FORMAT_VERSION:
        return [f"format version {_show(meta.get('format_version'))} -> {FORMAT_VERSION}"]
    old = UNRECORDED_SETTINGS | meta.get("options", {})
    return [
        f"{'--' + key.replace('_', '-') if key not in UNRECORDED_SETTINGS else key} {_show(old.get(key))} -> {_show(value)}"
        for key, value in opts.items()
        if old.get(key) != value
    ]


def _refuse_reuse(out: Path, differences: list[str]) -> PrepareError:
    return PrepareError(
        f"'{out}' holds data prepared with other settings: {', '.join(differences)}. Choose another --out, "
        "or pass --force to replace it (it is quadgpt's own prepared data)."
    )


def _tasks(corpus: Corpus, threshold: float, opts: dict[str, Any], counts: dict[str, int]) -> Iterator[tuple]:
    """Batches of documents of one split each, ~BATCH_CHARS of text per batch, for ``encode_batch``;
    ``counts`` tallies the documents read and those dropped, by reason (see ``non_empty``)."""
    buffers: dict[str, tuple[list[int], list[str]]] = {split: ([], []) for split in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    for domain, text in non_empty(corpus.documents, counts):
        split = "val" if val_score(text, opts["seed"]) <= threshold else "train"
        buffers[split][0].append(domain)
        buffers[split][1].append(text)
        sizes[split] += len(text)
        if sizes[split] >= BATCH_CHARS:
            yield (opts["tokenizer"], split, *buffers[split], len(corpus.domains))
            buffers[split], sizes[split] = ([], []), 0
    for split in SPLITS:
        if buffers[split][1]:
            yield (opts["tokenizer"], split, *buffers[split], len(corpus.domains))


def _encoded(pool: Any, tasks: Iterable[tuple], window: int) -> Iterator[tuple]:
    """``encode_batch`` over ``tasks`` in order, at most ``window`` in flight (bounded memory when streaming)."""
    if pool is None:
        yield from map(encode_batch, tasks)
        return
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(encode_batch, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _open_corpus(source: str, scratch: Path, pool: Any, opts: dict[str, Any], progress: bool) -> Corpus:
    if source.startswith("builtin:"):
        map_fn = (lambda fn, items: pool.imap(fn, items, chunksize=8)) if pool is not None else map
        return open_builtin(source, map_fn, progress)
    if source.startswith("hf:"):
        return open_hf(
            source[3:],
            subset=opts["subset"],
            split=opts["split"],
            text_field=opts["text_field"],
            streaming=opts["streaming"],
        )
    return open_local(source, scratch, text_field=opts["text_field"], line_docs=opts["line_docs"])


def _check_options(val_fraction: float | None, val_count: int | None, shard_tokens: int, num_proc: int) -> None:
    if val_count is None and (val_fraction is None or not 0.0 < val_fraction < 1.0):
        raise PrepareError(f"--val-fraction must be in (0, 1); got {val_fraction}.")
    if val_count is not None and val_count < 1:
        raise PrepareError(f"--val-count must be >= 1; got {val_count}.")
    if shard_tokens < 1:
        raise PrepareError(f"--shard-tokens must be >= 1; got {shard_tokens}.")
    if num_proc < 1:
        raise PrepareError(f"--num-proc must be >= 1; got {num_proc}.")


def prepare(
    source: str,
    out_dir: str | Path,
    *,
    val_fraction: float | None = None,
    val_count: int | None = None,
    seed: int = 0,
    shard_tokens: int = 100_000_000,
    num_proc: int | None = None,
    text_field: str = "text",
    subset: str | None = None,
    split: str = "train",
    streaming: bool = False,
    line_docs: bool = False,
    force: bool = False,
    tokenizer: str = "gpt2",
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenise ``source`` into shards at ``out_dir`` and return the ``meta.json`` written (or found).

    ``val_fraction=None`` (with no ``val_count``) takes 5% of the documents of a built-in corpus,
    0.5% of any other; a corpus too small to split by document gets the last ``val_fraction``
    (default 10%) of its tokens as val. Raises ``PrepareError``/``UnsafeOutput`` for an output
    that would overwrite an input or something prepare did not write, or data prepared with
    other settings (unless ``force``), ``SourceError``/``SplitError`` for a source that cannot be
    read or split as asked; nothing is created before these checks.
    """
    position_val_fraction = val_fraction if val_fraction is not None else POSITION_VAL_FRACTION
    if val_fraction is None and val_count is None:
        val_fraction = BUILTIN_VAL_FRACTION if source.startswith("builtin:") else DEFAULT_VAL_FRACTION
    num_proc = num_proc or os.cpu_count() or 1
    _check_options(val_fraction, val_count, shard_tokens, num_proc)
    out = Path(out_dir)
    shard_dtype(get_tokenizer(tokenizer).n_vocab)  # a vocabulary too large for the shards fails before any work
    if source.startswith("builtin:") and source not in BUILTIN_DOMAINS:
        raise SourceError(f"Unknown built-in corpus '{source}'. Known: {', '.join(BUILTIN_DOMAINS)}.")
    files = None if source.startswith(("builtin:", "hf:")) else local_files(source)  # a missing path fails here
    check_output_path(out, source_inputs(source, files), suffix="prepared")
    existing = _existing_meta(out)
    opts = {  # everything that changes the output; their hash with the content's decides "no-op"
        "tokenizer": tokenizer,
        "val_fraction": None if val_count is not None else val_fraction,
        "val_count": val_count,
        "seed": seed,
        "shard_tokens": shard_tokens,
        "text_field": text_field,
        "subset": subset,
        "split": split,
        "streaming": streaming,
        "line_docs": line_docs,
        "position_val_fraction": position_val_fraction,
        # CSV cells such as NA or null are text (pandas would read them as missing): a setting, so
        # that CSV data prepared before this rule is not silently reused
        "csv_cells": "text" if files and BUILDERS[files[0].suffix.lower()] == "csv" else None,
    }
    if existing is not None and not force and (differences := settings_differences(existing, opts)):
        raise _refuse_reuse(out, differences)  # before reading the corpus
    missing_parents = [p for p in reversed(out.absolute().parents) if not p.exists()]
    tmp = prepare_tmp_folder(out)
    start = time.perf_counter()
    try:
        with process_pool(num_proc) as pool:
            corpus = _open_corpus(source, tmp / ".scratch", pool, opts, progress)
            fingerprint = _fingerprint(corpus, opts)
            if existing is not None and not force:
                if existing.get("source", {}).get("content_hash") == corpus.content_hash:
                    shutil.rmtree(tmp)
                    print(
                        f"'{out}' already holds {source} prepared with these options: "
                        "nothing to do (--force redoes it)."
                    )
                    return existing
                old_spec = existing.get("source", {}).get("spec")
                raise _refuse_reuse(out, [f"source {old_spec} -> {source} (other content)"])
            meta = write_shards(corpus, tmp, opts, pool=pool, num_proc=num_proc, progress=progress)
        shutil.rmtree(tmp / ".scratch", ignore_errors=True)
        meta.update(
            source={
                "spec": source,
                "description": corpus.description,
                "content_hash": corpus.content_hash,
                "notes": corpus.notes,
            },
            options=opts,
            fingerprint=fingerprint,
            quadgpt_version=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        commit_tmp_folder(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(missing_parents):  # leave no empty folders this run created
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    _print_summary(meta, out, time.perf_counter() - start)
    return meta


def process_pool(num_proc: int) -> contextlib.AbstractContextManager:
    """A pool of ``num_proc`` worker processes, or a context giving None (work in this process) for 1.

    Forked where the platform allows: workers inherit the loaded tokenizer and modules instead of
    re-importing quadgpt (and torch) in each one.
    """
    if num_proc <= 1:
        return contextlib.nullcontext()
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(num_proc)


def write_shards(
    corpus: Corpus, folder: Path, opts: dict[str, Any], *, pool: Any = None, num_proc: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Tokenise every document of ``corpus`` into shards in ``folder`` (through ``pool``, a process
    pool of ``num_proc`` workers, or in this process when None); returns the meta fields that
    describe the tokens. ``opts`` needs tokenizer, val_fraction, val_count, seed, shard_tokens.
    """
    dtype = shard_dtype(get_tokenizer(opts["tokenizer"]).n_vocab)
    for note in corpus.notes:
        print(f"note: {note}", file=sys.stderr)
    writers = {split: ShardWriter(folder, split, opts["shard_tokens"], dtype) for split in SPLITS}
    n_domains = len(corpus.domains)
    tokens = {split: np.zeros(n_domains, dtype=np.int64) for split in SPLITS}
    docs = {split: np.zeros(n_domains, dtype=np.int64) for split in SPLITS}
    counts = dict.fromkeys(("read", *DROP_REASONS), 0)
    threshold = val_threshold(corpus, opts["val_fraction"] or 0.0, opts["val_count"], opts["seed"])
    tasks = _tasks(corpus, -1.0 if threshold is None else threshold, opts, counts)  # -1: every document trains
    bar = tqdm(total=corpus.num_documents, unit="doc", desc="tokenising", disable=not progress, file=sys.stderr)
    started = time.perf_counter()
    try:
        for split, ids, domain_tokens, domain_docs in _encoded(pool, tasks, window=2 * num_proc):
            writers[split].write(ids)
            tokens[split] += domain_tokens
            docs[split] += domain_docs
            total = int(sum(t.sum() for t in tokens.values()))
            bar.update(counts["read"] - bar.n)
            bar.set_postfix_str(f"{total / max(time.perf_counter() - started, 1e-9) / 1e6:.2f}M tok/s", refresh=False)
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
    dropped = {reason: counts[reason] for reason in DROP_REASONS}
    kept = counts["read"] - sum(dropped.values())
    if kept == 0:
        raise SourceError(f"The corpus is empty: {counts['read']} document(s) read, none with text ({_dropped_text(dropped)}).")
    split_by = {"by": "document"}
    if writers["val"].tokens == 0 and opts["val_count"] is None:  # too few documents: split by position
        split_by = _split_by_position(writers, tokens, opts["position_val_fraction"], kept)
    if writers["train"].tokens == 0:
        raise PrepareError(f"The train split is empty ({kept} non-empty documents in all). Lower --val-fraction.")
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tokenizer": opts["tokenizer"],
        "vocab_size": get_tokenizer(opts["tokenizer"]).n_vocab,
        "eot_token": get_tokenizer(opts["tokenizer"]).eot_id,
        "dtype": dtype.name,
        "val_split": split_by,
        "splits": {
            split: {
                "tokens": writers[split].tokens,
                "documents": int(docs[split].sum()),
                "shards": writers[split].shards,
            }
            for split in SPLITS
        },
        "domains": {
            name: {split: {"tokens": int(tokens[split][i]), "documents": int(docs[split][i])} for split in SPLITS}
            for i, name in enumerate(corpus.domains)
        },
        "documents_read": counts["read"],
        "documents_dropped": dropped,
    }


def _split_by_position(
    writers: dict[str, ShardWriter], tokens: dict[str, np.ndarray], share: float, kept: int
) -> dict[str, Any]:
    """Move the last ``share`` of the train stream's tokens into val (nanoGPT's character-level
    split) and return how meta.json describes it. Only for a corpus whose documents all went to
    train; the moved tokens are counted in the one domain that holds train tokens."""
    total = writers["train"].tokens
    n_val = max(1, round(total * share))
    if total - n_val < 1:
        raise SourceError(f"The corpus holds {total} token(s): too few for a train and a val split.")
    domains = np.flatnonzero(tokens["train"])
    if len(domains) != 1:  # a position split of several domains would mix them in val
        raise SplitError(f"The corpus has {kept} document(s) in several domains: too few to split by document.")
    move_tail(writers["train"], writers["val"], n_val)
    tokens["train"][domains[0]] -= n_val
    tokens["val"][domains[0]] += n_val
    reason = f"{kept} non-empty document(s): too few to split by document"
    return {"by": "position", "val_fraction": share, "reason": reason}


def _dropped_text(dropped: dict[str, int]) -> str:
    parts = [f"{n:,} {reason}" for reason, n in dropped.items() if n]
    return "dropped " + ", ".join(parts) if parts else "none dropped"


def _print_summary(meta: dict[str, Any], out: Path, seconds: float) -> None:
    total = sum(s["tokens"] for s in meta["splits"].values())
    print(f"prepared {meta['source']['spec']} -> {out}  ({total:,} tokens in {seconds:.1f} s)")
    print(f"  documents read: {meta['documents_read']:,}, {_dropped_text(meta['documents_dropped'])}")
    split_by = meta["val_split"]
    if split_by["by"] == "position":
        print(f"  val split BY POSITION: the last {split_by['val_fraction']:.1%} of the tokens "
              f"({split_by['reason']}); --val-fraction sets the share")
    print(f"  {'split':<6} {'domain':<8} {'documents':>10} {'tokens':>13}")
    for split in SPLITS:
        for domain, per_split in meta["domains"].items():
            print(f"  {split:<6} {domain:<8} {per_split[split]['documents']:>10,} {per_split[split]['tokens']:>13,}")
        info = meta["splits"][split]
        shards = len(info["shards"])
        print(f"  {split:<6} {'all':<8} {info['documents']:>10,} {info['tokens']:>13,}  ({shards} shard(s))")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quadgpt prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="builtin:stdlib[-code|-prose], a file/folder/glob, or hf:NAME")
    parser.add_argument("--out", required=True, help="output folder (created atomically)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--val-fraction", type=float, default=None, help="share of documents for val (default 0.05 built-in, else 0.005)"
    )
    group.add_argument("--val-count", type=int, default=None, help="exact number of documents for val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val document split")
    parser.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard file")
    parser.add_argument("--num-proc", type=int, default=None, help="tokeniser processes (default: all cores)")
    parser.add_argument("--text-field", default="text", help="field holding the text (.jsonl/.json/.parquet/.csv/hf)")
    parser.add_argument("--subset", default=None, help="hf: dataset configuration name")
    parser.add_argument("--split", default="train", help="hf: dataset split to read (default train)")
    parser.add_argument("--streaming", action="store_true", help="hf: tokenise while streaming (no full download)")
    parser.add_argument("--line-docs", action="store_true", help=".txt: one document per line, not per file")
    parser.add_argument("--tokenizer", default="gpt2", choices=list(TOKENIZERS),
                        help="gpt2 (BPE, default) or bytes (UTF-8 bytes + end-of-text, 257 ids)")
    parser.add_argument("--force", action="store_true", help="redo, replacing data quadgpt prepared at --out (nothing else)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        prepare(
            args.source, args.out, val_fraction=args.val_fraction, val_count=args.val_count, seed=args.seed,
            shard_tokens=args.shard_tokens, num_proc=args.num_proc, text_field=args.text_field, subset=args.subset,
            split=args.split, streaming=args.streaming, line_docs=args.line_docs, force=args.force,
            tokenizer=args.tokenizer, progress=not args.no_progress,
        )
    except (PrepareError, SourceError, SplitError, VocabTooLarge, DataError, TokenizerUnavailable, UnsafeOutput) as err:
        print(f"quadgpt prepare: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
