"""Configuration: plain dataclasses, loaded from TOML and overridden from the command line.

One tree (``Config``) with four sections — ``model`` (with ``model.ffn`` nested), ``data``,
``train`` and ``sample`` — instead of a growing list of flags. Values come from, in order:
the dataclass defaults, a TOML file (``--config F``), then ``--section.key=value`` overrides.
Every key is checked against the dataclass: an unknown one fails with a did-you-mean
suggestion, a value of the wrong type fails naming the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message says which and why."""


@dataclass
class FFNConfig:
    """Which feed-forward block each transformer layer uses, and its knobs.

    ``hidden = 0`` picks the parameter-matched default width of the kind (see ``quadgpt.ffn``).
    """

    kind: str = "mlp"  # mlp | swiglu | quadratic | kan (see quadgpt.ffn.FFN_REGISTRY)
    hidden: int = 0  # hidden width; 0 = the kind's parameter-matched default
    activation: Literal["gelu", "gelu_tanh", "relu", "relu2"] = "gelu"  # mlp only; relu2 = relu(x)^2
    rank: int = 1  # quadratic: number of (xu)(xv) products per hidden unit
    linear_term: bool = True  # quadratic: keep the + x.w term
    grid_size: int = 5  # kan: intervals of the uniform B-spline grid
    spline_order: int = 3  # kan: B-spline degree (3 = cubic)
    base: Literal["silu", "none"] = "silu"  # kan: residual SiLU base branch, or none
    freeze_base: bool = False  # kan: keep the base branch at its initial weights
    kernel: Literal["auto", "triton", "torch"] = "auto"  # auto = Triton on CUDA when available


@dataclass
class ModelConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 rounded up to a multiple of 64 for speed (bytes: 257 -> 320)
    tokenizer: str = "gpt2"  # what the ids mean: gpt2 | bytes (quadgpt.tokenizer.TOKENIZERS); data must match
    dropout: float = 0.0
    bias: bool = True
    attention: Literal["auto", "sdpa", "flash_attn", "math"] = "auto"
    ffn: FFNConfig = field(default_factory=FFNConfig)


@dataclass
class DataConfig:
    dataset: str = "data/stdlib"  # folder of prepared shards (see `quadgpt prepare`)
    source: str = "builtin:stdlib"  # what `quadgpt demo` prepares into `dataset` if it is missing
    sampling: Literal["random", "sequential"] = "random"
    val_windows: int = 256  # fixed validation windows, the same for every run on this data
    replay_dataset: str = ""  # optional second corpus mixed in (forgetting mitigations)
    replay_fraction: float = 0.0  # fraction of each batch's sequences drawn from replay_dataset
    extra_val: str = ""  # more validation sets, evaluated beside `dataset`: "name=path,name2=path2"


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    compile: bool = False
    batch_size: int = 8  # sequences per micro-batch per process
    global_batch_tokens: int = 0  # tokens per optimizer step; 0 = batch_size*block_size*world
    max_steps: int = 1000
    max_tokens: int = 0  # 0 = no limit
    max_time: float = 0.0  # seconds; 0 = no limit
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 100
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_frac: float = 0.2  # wsd: fraction of max_steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 200
    log_interval: int = 10
    ckpt_interval: int = 200
    keep_last: int = 2
    resume: str = ""  # "" = fresh run, "auto" = latest checkpoint in out_dir, or a path
    init_from: str = ""  # start from this checkpoint's weights (fresh optimizer, step 0)
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    distributed: Literal["ddp", "fsdp"] = "ddp"  # fsdp = FSDP2 sharding (quadgpt/parallel.py)
    checkpoint_format: Literal["safetensors", "dcp"] = "safetensors"  # dcp = sharded, each rank writes its own
    activation_checkpointing: bool = False  # recompute each block's activations in backward
    peak_tflops: float = 0.0  # 0 = look the accelerator up in quadgpt's table
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "quadgpt"


@dataclass
class SampleConfig:
    prompt: str = "\n"
    num_samples: int = 1
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 200
    top_p: float = 1.0
    seed: int = 1337


@dataclass
class StudyConfig:
    """``quadgpt study``: the FFN comparison with a learning-rate sweep and seeds (eval/study.py)."""

    variants: str = "mlp-gelu,mlp-relu2,swiglu,quadratic,kan"  # also kan-nobase, kan-frozenbase
    seeds: str = "1,2,3,4,5"  # same seed = same data order and initial-weight seed for every variant
    lrs: str = "1e-3,2e-3,4e-3"  # phase-A sweep per variant (one value: no sweep); min_lr = lr / 10
    sweep_seed: int = 1
    sweep_steps: int = 0  # 0 = half of steps_a
    lr_from: str = ""  # another study's folder: take each variant's best lr from its sweep instead
    steps_a: int = 1000
    steps_b: int = 300
    eval_every_b: int = 25
    task_a: str = "builtin:stdlib-code"
    task_b: str = "builtin:stdlib-prose"
    data_root: str = "data"
    out: str = "runs/study"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")


# --------------------------------------------------------------------------------------
# Building dataclasses from plain dicts, with key and type checking
# --------------------------------------------------------------------------------------


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Known keys: {', '.join(known)}."


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting int -> float where lossless)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return from_dict(tp, value, prefix=where + ".")
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - only the types above are used in configs
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{where} must be of type {name}; got {value!r} ({type(value).__name__}).")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"Unknown config key '{prefix}{key}'.{_suggest(key, known)}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def _parse_scalar(text: str, tp: Any) -> Any:
    """Turn a command-line string into a value of annotation ``tp``."""
    if typing.get_origin(tp) is Literal or tp is str:
        return text
    if tp is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        return text  # let _coerce report the type error
    for conv in (int, float):
        if tp is conv:
            try:
                return conv(text)
            except ValueError:
                if conv is float:
                    return text
                try:
                    return float(text)
                except ValueError:
                    return text
    return text


def apply_override(tree: dict[str, Any], dotted: str, text: str) -> None:
    """Set ``tree[a][b][c] = value`` for ``dotted = "a.b.c"``, parsing ``text`` by its type."""
    parts = dotted.split(".")
    cls: Any = Config
    node = tree
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            known = [f.name for f in dataclasses.fields(cls)]
            where = ".".join(parts[:i] + [part])
            raise ConfigError(f"Unknown config key '{where}'.{_suggest(part, known)}")
        tp = hints[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise ConfigError(f"'{dotted}' is a section; set one of its keys, e.g. --{dotted}.KEY=VALUE.")
            node[part] = _parse_scalar(text, tp)
        else:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"'{'.'.join(parts[: i + 1])}' is not a section.")
            node = node.setdefault(part, {})
            cls = tp


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the TOML file at ``path``, then ``key=value`` overrides (leading -- optional)."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file '{path}' does not exist (presets live in configs/).")
        try:
            tree = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"Config file '{path}' is not valid TOML: {err}") from err
    override_tree: dict[str, Any] = {}
    for item in overrides or []:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"Override '{item}' must look like section.key=value.")
        key, text = item.split("=", 1)
        apply_override(override_tree, key.strip(), text)
    return from_dict(Config, _deep_merge(tree, override_tree))


def config_from_json(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``Config.to_dict`` (e.g. from a checkpoint's config.json)."""
    return from_dict(Config, data)


def split_config_args(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Separate ``--config F`` and ``--section.key=value`` overrides from other arguments.

    Returns (config path, overrides, remaining args). Any dotted ``--a.b=...`` argument is an
    override, so that a misspelt section gets a did-you-mean from ``load_config``.
    """
    config_path = None
    overrides: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file path.")
            config_path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
        elif arg.startswith("--") and "." in arg.split("=", 1)[0]:
            if "=" in arg:
                overrides.append(arg)
            elif i + 1 < len(argv):  # --section.key value
                overrides.append(f"{arg}={argv[i + 1]}")
                i += 1
            else:
                raise ConfigError(f"Override {arg} needs a value.")
        else:
            rest.append(arg)
        i += 1
    return config_path, overrides, rest
