"""Learning-rate schedules: a pure function of the step, so resuming needs no scheduler state.

- ``cosine``: linear warmup to ``lr``, then half a cosine down to ``min_lr`` at the horizon.
- ``wsd`` (warmup-stable-decay, Hu et al. 2024, "MiniCPM"): warmup, constant ``lr``, then a
  linear decay to ``min_lr`` over the last ``decay_frac`` of the horizon. Its stable phase
  can be extended (or branched from) without knowing the final length in advance.
- ``constant``: warmup, then ``lr``.

Because the rate depends only on ``(step, config, horizon)``, a checkpoint stores the step and
the schedule's settings (in its config.json) instead of a pickled scheduler object.
"""

from __future__ import annotations

import math

from .config import ConfigError, TrainConfig


def lr_at(step: int, cfg: TrainConfig, horizon: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of a run of ``horizon`` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if horizon <= 0:
        raise ConfigError(
            f"train.schedule='{cfg.schedule}' needs a known run length: set train.max_steps or "
            "train.max_tokens (or use train.schedule='constant' with train.max_time alone)."
        )
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps))
        return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_frac * horizon))
        decay_start = max(cfg.warmup_steps, horizon - decay_steps)
        if step < decay_start:
            return cfg.lr
        progress = min(1.0, (step - decay_start) / max(1, horizon - decay_start))
        return cfg.lr + progress * (cfg.min_lr - cfg.lr)
    raise ConfigError(f"train.schedule must be cosine, wsd or constant; got {cfg.schedule!r}.")


def check_schedule(cfg: TrainConfig) -> None:
    """Reject schedule settings that would silently misbehave, naming the field to fix."""
    if cfg.lr <= 0 or cfg.min_lr < 0 or cfg.min_lr > cfg.lr:
        raise ConfigError(f"Need 0 <= train.min_lr <= train.lr and lr > 0; got lr={cfg.lr}, min_lr={cfg.min_lr}.")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0; got {cfg.warmup_steps}.")
    if not 0.0 < cfg.decay_frac <= 1.0:
        raise ConfigError(f"train.decay_frac must be in (0, 1]; got {cfg.decay_frac}.")
