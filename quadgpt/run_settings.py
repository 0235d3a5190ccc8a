"""Is earlier work (a checkpoint, a finished phase, a run folder) made with the settings asked for now?

Every reuse of earlier work compares the config it was made with (saved as JSON beside it) with
the config of the request, key by key, and refuses naming each difference. Two sets of keys may
differ:

- ``REUSE_MAY_CHANGE``, for reusing a *finished* result: keys that change neither the weights nor
  the numbers reported (where it runs, how often it logs or checkpoints, sampling defaults);
- ``RESUME_MAY_CHANGE``, for *continuing* a run: those, plus the run length (``max_steps``,
  ``max_tokens``, ``max_time``: a run may be extended; the cosine/WSD horizon follows the new
  length from the resumed step on), ``eval_interval``, and ``init_from`` (a resumed run's weights
  come from its checkpoint, never from ``init_from``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import Config, ConfigError

REUSE_MAY_CHANGE = frozenset({
    "train.out_dir", "train.resume", "train.device", "train.compile", "train.distributed", "train.peak_tflops",
    "train.tensorboard", "train.wandb", "train.wandb_project", "train.max_bad_steps", "train.log_interval",
    "train.ckpt_interval", "train.keep_last", "model.attention", "model.ffn.kernel", "data.source",
})
RESUME_MAY_CHANGE = REUSE_MAY_CHANGE | {
    "train.max_steps", "train.max_tokens", "train.max_time", "train.eval_interval", "train.init_from",
}
IGNORED_SECTIONS = ("sample.", "study.")  # never decide what a run computes
_PATH_KEYS = {"data.dataset", "data.replay_dataset", "train.init_from"}


class SettingsMismatch(ConfigError):
    """Earlier work was made with other settings than the ones asked for now."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _normal(key: str, value: Any) -> Any:
    """Paths compare by the folder they name, not by how they were spelt."""
    if key in _PATH_KEYS and value:
        return str(Path(value).resolve())
    if key == "data.extra_val" and value:
        items = (item.partition("=") for item in value.split(",") if item.strip())
        return ",".join(f"{n.strip()}={Path(p.strip()).resolve()}" for n, _, p in items)
    return value


def differences(saved: dict[str, Any], wanted: Config, may_change: frozenset[str] | set[str]) -> list[str]:
    """``"key: X there, Y now"`` for each key of ``wanted`` that differs from the saved config
    dict ``saved`` and is not in ``may_change``. ``sample.*`` and ``study.*`` never matter to a run:
    they set sampling defaults and which runs a study makes, not what any run computes."""
    old, new = flatten(saved), flatten(wanted.to_dict())
    return [
        f"{key}: {old.get(key)!r} there, {new.get(key)!r} now"
        for key in sorted(set(old) | set(new))
        if key not in may_change and not key.startswith(IGNORED_SECTIONS)
        and _normal(key, old.get(key)) != _normal(key, new.get(key))
    ]


def check_same_settings(config_file: Path, wanted: Config, may_change: frozenset[str] | set[str], what: str,
                        remedy: str) -> None:
    """Raise SettingsMismatch (one line: the differing keys and ``remedy``) unless the config saved
    in ``config_file`` equals ``wanted`` outside ``may_change``. A missing file passes."""
    if not config_file.is_file():
        return
    try:
        saved = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise SettingsMismatch(f"{what}: its {config_file.name} is not valid JSON ({err}); {remedy}") from err
    diffs = differences(saved, wanted, may_change)
    if diffs:
        raise SettingsMismatch(f"{what} was made with other settings ({'; '.join(diffs)}); {remedy}")
