"""``quadgpt demo``: the whole pipeline in one command, on a laptop-class CPU in under ten minutes.

1. prepare the built-in corpus (Python's own standard library, no download) if it is missing;
2. train ``configs/tiny.toml`` under a wall-clock budget;
3. compare the validation loss with the unigram baseline of the same data (the loss of a model
   that ignores context): a model that learned anything beyond token frequencies is below it;
4. print a sample from the best checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .config import ConfigError, load_config, split_config_args
from .data import DataError, unigram_baseline_loss

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"
BUDGET_S = 600.0  # the demo's promise: done within ten minutes on two CPU cores
RESERVE_S = 40.0  # kept from the training budget for the last evaluation, the save and the sample


def ensure_dataset(data_dir: str, source: str) -> None:
    """Prepare ``source`` into ``data_dir`` unless a prepared dataset is already there."""
    if (Path(data_dir) / "meta.json").is_file():
        print(f"quadgpt demo: using the prepared dataset in {data_dir}", flush=True)
        return
    from data_prep.prepare import prepare  # `datasets` stays out of the import path until needed

    print(f"quadgpt demo: preparing {source} into {data_dir} ...", flush=True)
    try:
        prepare(source, data_dir)
    except (ValueError, RuntimeError) as err:  # data_prep's source/option errors, tokenizer unavailable
        raise DataError(f"Preparing data.source='{source}' into data.dataset='{data_dir}' failed: {err}") from err


def print_sample(run_dir: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int, seed: int) -> None:
    from .checkpoint import load_model
    from .tokenizer import decode, encode

    model, config, meta = load_model(run_dir)
    idx = torch.tensor([encode(prompt, config.model.tokenizer)], dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    print(f"\n--- sample from {meta['checkpoint']} (step {meta['step']}, temperature {temperature}, top-k {top_k}) ---")
    print(decode(out[0].tolist(), config.model.tokenizer))
    print("--- end of sample ---")


def main(argv: list[str] | None = None) -> int:
    """Prepare builtin:stdlib, train the tiny model for at most ten minutes, compare its val loss
    with the unigram baseline and print a sample. Extra ``--section.key=value`` overrides apply
    to the training config. On a machine too slow for all of train.max_steps in the budget,
    training stops early (train.max_time); running the demo again continues that run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="quadgpt demo", description=main.__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: configs/tiny.toml)")
    parser.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole demo (default: 600)")
    parser.add_argument("--prompt", default="def ", help="text the sample continues")
    started = time.time()
    from .trainer import ResultLost, TrainingDiverged, train  # (bound before the except clauses name them)

    try:
        config_path, overrides, rest = split_config_args(argv)
        args = parser.parse_args(rest)
        config = load_config(config_path or args.config, [f"train.out_dir={args.out}", "train.resume=auto", *overrides])
        ensure_dataset(config.data.dataset, config.data.source)

        baseline = unigram_baseline_loss(config.data.dataset)
        left = args.budget - (time.time() - started) - RESERVE_S
        if config.train.max_time <= 0 or config.train.max_time > left:
            config.train.max_time = max(left, 1.0)  # stop early on a slow or busy machine
        summary = train(config)
    except (ConfigError, CheckpointError, DataError) as err:
        print(f"quadgpt demo: error: {err}", file=sys.stderr)
        return 2
    except (TrainingDiverged, ResultLost) as err:  # trained, but nothing usable was saved
        print(f"quadgpt demo: stopped: {err}", file=sys.stderr)
        return 1
    val = summary["best_val_loss"]
    print(
        f"\nquadgpt demo: {summary['steps']} steps, {summary['tokens']:,} tokens ({summary['stopped_by']}); "
        f"best val loss {val:.3f} vs unigram baseline {baseline:.3f} ({val - baseline:+.3f} nats)"
    )
    if val >= baseline:
        print("quadgpt demo: WARNING: the model did not beat the unigram baseline; the machine may have been "
              "too busy for the time budget (see tokens/s above). Run the demo again to continue training.")
    s = config.sample
    print_sample(args.out, args.prompt, min(s.max_new_tokens, config.model.block_size - 8), s.temperature, s.top_k, s.seed)
    print(f"\nquadgpt demo: done in {time.time() - started:.0f} s. Run folder: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
