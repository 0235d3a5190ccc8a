"""Everything about a training run that can be checked before it starts, in one place.

Every command that trains (``train``, ``eval forgetting``, ``compare``) calls ``check_run`` on each
run's config before it creates a folder or takes a step, so a bad setting costs a one-line
``ConfigError`` / ``DataError`` (exit code 2) instead of a traceback at step 1 or, worse, after
phase A of a probe has trained for an hour. Three layers:

- ``check_config``: the config alone (model dimensions, FFN knobs, schedule, batch geometry,
  run length, optimizer, replay);
- ``check_data``: the config against its datasets (they exist, their tokenizer fits the
  vocabulary, their splits are long enough for one batch and one validation window);
- ``check_disk``: room on ``train.out_dir``'s disk for one checkpoint (weights + AdamW state)
  and the ``best/`` weights, so a run does not train for hours and then lose its result.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .config import Config, ConfigError
from .data import DataError, TokenDataset, load_meta

# fp32 weights (4 bytes) + AdamW's two fp32 moments (8 bytes) per parameter in a step checkpoint,
# and 4 more for the weights-only best/ checkpoint that is written beside it
CHECKPOINT_BYTES_PER_PARAM = 4 + 8 + 4
DISK_SLACK = 1.1  # JSON, RNG and loader states, file-system rounding


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_model(config: Config) -> None:
    """Model dimensions and FFN settings that would fail (or silently do nothing) at build time."""
    from .ffn import ffn_class

    m, f = config.model, config.model.ffn
    for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        _require(getattr(m, name) >= 1, f"model.{name} must be >= 1; got {getattr(m, name)}.")
    _require(m.n_embd % m.n_head == 0,
             f"model.n_embd={m.n_embd} must be divisible by model.n_head={m.n_head} "
             f"(e.g. model.n_head={max(h for h in range(1, m.n_head + 1) if m.n_embd % h == 0)}).")
    _require(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1); got {m.dropout}.")
    try:
        ffn_class(f.kind)
    except ValueError as err:
        raise ConfigError(f"model.ffn.kind: {err}") from None
    _require(f.hidden >= 0, f"model.ffn.hidden must be >= 0 (0 = the kind's matched width); got {f.hidden}.")
    _require(f.rank >= 1, f"model.ffn.rank must be >= 1; got {f.rank}.")
    _require(f.grid_size >= 1, f"model.ffn.grid_size must be >= 1; got {f.grid_size}.")
    _require(f.spline_order >= 0, f"model.ffn.spline_order must be >= 0; got {f.spline_order}.")
    if f.freeze_base:  # a no-op elsewhere: refuse rather than let a run claim a mitigation it lacks
        _require(f.kind == "kan", f"model.ffn.freeze_base applies to model.ffn.kind=kan only; this model's is '{f.kind}'.")
        _require(f.base != "none", "model.ffn.freeze_base=true needs a base branch to freeze; model.ffn.base is 'none'.")


def check_train(config: Config, world_size: int = 1) -> None:
    """Schedule, run length, batch geometry and optimizer settings."""
    from .schedule import check_schedule
    from .trainer import parse_extra_val, plan_batches

    t, d = config.train, config.data
    check_schedule(t)
    plan = plan_batches(config, world_size)  # batch sizes, global batch, intervals, run length
    if plan.horizon:
        _require(t.warmup_steps <= plan.horizon,
                 f"train.warmup_steps={t.warmup_steps} exceeds the run's {plan.horizon} steps: the learning rate would "
                 f"never reach train.lr. Use train.warmup_steps <= {plan.horizon}.")
    for name in ("beta1", "beta2"):
        _require(0.0 <= getattr(t, name) < 1.0, f"train.{name} must be in [0, 1); got {getattr(t, name)}.")
    for name in ("weight_decay", "max_time", "peak_tflops"):
        _require(getattr(t, name) >= 0, f"train.{name} must be >= 0; got {getattr(t, name)}.")
    _require(re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None,
             f"train.device must be auto, cpu, cuda or cuda:N; got {t.device!r}.")
    _require(d.val_windows >= 1, f"data.val_windows must be >= 1; got {d.val_windows}.")
    parse_extra_val(d.extra_val)
    _require(0.0 <= d.replay_fraction < 1.0, f"data.replay_fraction must be in [0, 1); got {d.replay_fraction}.")
    if d.replay_fraction and not d.replay_dataset:
        raise ConfigError(f"data.replay_fraction={d.replay_fraction} needs data.replay_dataset (the corpus to replay).")
    if d.replay_dataset:
        _require(d.replay_fraction > 0, "data.replay_dataset is set but data.replay_fraction is 0; set it in (0, 1).")
        n_replay = replay_sequences(config)
        _require(0 < n_replay < t.batch_size,
                 f"data.replay_fraction={d.replay_fraction} of train.batch_size={t.batch_size} gives {n_replay} replay "
                 "sequences per micro-batch; it must be between 1 and batch_size-1.")


def replay_sequences(config: Config) -> int:
    """Sequences of each micro-batch drawn from ``data.replay_dataset``."""
    return round(config.data.replay_fraction * config.train.batch_size)


def check_config(config: Config, world_size: int = 1) -> None:
    """Everything the config alone decides. Raises ConfigError naming the field to change."""
    check_model(config)
    check_train(config, world_size)


def check_data(config: Config, world_size: int = 1) -> None:
    """The config against its datasets. Raises DataError (missing or too short data) or
    ConfigError (a vocabulary too small for the data's tokenizer)."""
    from .trainer import parse_extra_val

    m, t, d = config.model, config.train, config.data
    n_replay = replay_sequences(config) if d.replay_dataset else 0
    train_sets = {"data.dataset": (d.dataset, t.batch_size - n_replay)}
    if d.replay_dataset:
        train_sets["data.replay_dataset"] = (d.replay_dataset, n_replay)
    val_sets = {"data.dataset": d.dataset} | {f"data.extra_val ({k})": v for k, v in parse_extra_val(d.extra_val).items()}
    for key, path in {**{k: p for k, (p, _) in train_sets.items()}, **val_sets}.items():
        meta = load_meta(path)
        data_vocab = int(meta.get("vocab_size", 0))
        if data_vocab > m.vocab_size:
            raise ConfigError(
                f"{key} '{path}' holds token ids up to {data_vocab - 1} ({meta.get('tokenizer', 'its tokenizer')}), "
                f"but model.vocab_size={m.vocab_size}. Use model.vocab_size >= {data_vocab}."
            )
    for key, (path, batch) in train_sets.items():
        split = TokenDataset(path, "train")
        need = m.block_size + 1 if d.sampling == "random" else world_size * batch * m.block_size + 1
        if len(split) < need:
            raise DataError(
                f"{key} '{path}': its train split has {len(split)} tokens, fewer than the {need} one batch needs "
                f"(model.block_size={m.block_size}, {d.sampling} sampling). Use a smaller model.block_size or more data."
            )
    for key, path in val_sets.items():
        split = TokenDataset(path, "val")
        if len(split) < m.block_size + 1:
            raise DataError(
                f"{key} '{path}': its val split has {len(split)} tokens, too few for one window of "
                f"model.block_size={m.block_size}. Use model.block_size <= {len(split) - 1} or a larger val split."
            )


def checkpoint_bytes(config: Config) -> int:
    """Bytes one step checkpoint plus ``best/`` take for this model (fp32, AdamW)."""
    import torch

    from .model import GPT

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        n_params = GPT(config.model).num_params(non_embedding=False)
    return int(n_params * CHECKPOINT_BYTES_PER_PARAM * DISK_SLACK)


def check_disk(config: Config) -> None:
    """Refuse a run whose disk cannot hold one checkpoint: it would train and then lose its result."""
    folder = Path(config.train.out_dir).absolute()
    while not folder.exists():  # the disk the folder will be created on
        folder = folder.parent
    free, need = shutil.disk_usage(folder).free, checkpoint_bytes(config)
    if free < need:
        raise ConfigError(
            f"train.out_dir '{config.train.out_dir}' is on a disk with {free / 1e6:,.1f} MB free; one checkpoint of "
            f"this model needs ~{need / 1e6:,.1f} MB (weights, AdamW state, best/). Free space or choose another train.out_dir."
        )


def check_run(config: Config, world_size: int = 1) -> None:
    """All checks, config first (so that the data and disk checks see sane dimensions)."""
    check_config(config, world_size)
    check_data(config, world_size)
    check_disk(config)
