"""Tokenisation speed of ``quadgpt prepare`` against raw single-thread tiktoken, in one run.

    python bench/prepare.py [--source builtin:stdlib] [--num-proc 2] [--repeats 3]

Both sides tokenise the same documents (the built-in corpus, read once up front):

- raw: ``tiktoken`` ``encode_ordinary_batch(texts, num_threads=1)``, tokens kept as Python lists;
- prepare: the tokenise-and-write stage of ``quadgpt prepare`` (worker processes, uint16
  shards on disk, train/val routing), pool start-up included.

The best of ``--repeats`` runs is kept for each (least disturbed by other load). Reading and
parsing the stdlib (``ast``) is reported separately: it is the same for any tokeniser. The
machine's load average is printed beside the result, since a shared machine skews both sides;
the CPU seconds of each side (prepare's workers included), which other load does not change,
give the ratio the pipeline would reach on free cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: `python bench/prepare.py`

from data_prep.prepare import process_pool, write_shards  # noqa: E402
from data_prep.sources import open_builtin  # noqa: E402
from quadgpt.tokenizer import get_tokenizer  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (prepare's workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of ``repeats`` calls of ``fn``."""
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), cpu_seconds()
        fn()
        runs.append((time.perf_counter() - wall, cpu_seconds() - cpu))
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="builtin:stdlib", help="a built-in corpus")
    parser.add_argument("--num-proc", type=int, default=2, help="prepare's worker processes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    corpus = open_builtin(args.source)
    read_seconds = time.perf_counter() - start
    texts = [text for _, text in corpus.documents]
    enc = get_tokenizer("gpt2")
    n_tokens = sum(len(ids) for ids in enc.encode_ordinary_batch(texts, num_threads=1))  # also warms up

    raw, raw_cpu = measure(lambda: enc.encode_ordinary_batch(texts, num_threads=1), args.repeats)
    opts = {"tokenizer": "gpt2", "val_fraction": 0.005, "val_count": None, "seed": 0, "shard_tokens": 100_000_000}

    def run_prepare() -> None:
        with tempfile.TemporaryDirectory() as folder, process_pool(args.num_proc) as pool:
            meta = write_shards(corpus, Path(folder), opts, pool=pool, num_proc=args.num_proc, progress=False)
            if pool is not None:  # reap the workers so that their CPU time is counted
                pool.close()
                pool.join()
        written = sum(s["tokens"] for s in meta["splits"].values())
        if written != n_tokens + len(texts):  # every document's tokens plus its EOT
            raise RuntimeError(f"prepare wrote {written} tokens, raw tiktoken made {n_tokens} + {len(texts)} EOT")

    ours, ours_cpu = measure(run_prepare, args.repeats)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {args.source}, {len(texts)} documents, {mb:.1f} MB, {n_tokens:,} tokens (+1 EOT per document)")
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} (shared: other jobs skew both sides)")
    print(f"reading + parsing the corpus (once, not timed below): {read_seconds:.2f} s")
    best = f"(best of {args.repeats})"
    print(f"raw tiktoken encode_ordinary_batch, 1 thread: {n_tokens / raw / 1e6:6.2f} M tokens/s {best}")
    print(f"prepare tokenise+write, {args.num_proc} processes: {n_tokens / ours / 1e6:6.2f} M tokens/s {best}")
    print(f"ratio prepare / raw single-thread: {raw / ours:.2f}x")
    # CPU time is what other load does not change: if prepare's CPU time were spread evenly over
    # num_proc free cores, its wall time would be ours_cpu / num_proc.
    spread = raw_cpu / (ours_cpu / args.num_proc)
    print(f"CPU seconds: raw {raw_cpu:.2f}, prepare {ours_cpu:.2f} (all its processes)")
    print(f"ratio with prepare's CPU spread evenly over {args.num_proc} free cores: {spread:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
