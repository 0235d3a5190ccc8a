"""Checkpoints: one folder per checkpoint, written atomically, loadable without unpickling code.

A checkpoint folder holds

- ``model.safetensors``: the weights (the LM head tied to ``wte`` is stored once, as ``wte.weight``),
  or, with ``train.checkpoint_format = "dcp"``, ``dcp/``: a ``torch.distributed.checkpoint``
  folder in which each rank wrote its own shards of the weights (and of the optimizer state);
- ``config.json``: the whole run ``Config`` (``Config.to_dict()``), enough to rebuild the model;
- ``meta.json``: step, tokens seen, val loss, tokenizer, dataset, quadgpt version;

and, for the trainer's full checkpoints (what ``--resume`` needs), also

- ``optimizer.pt``: the optimizer's state keyed by parameter name (tensors and numbers only;
  in ``dcp/`` instead for sharded checkpoints);
- ``rank_<r>.pt``: each process's RNG states (python, numpy, torch, cuda) and data-loader position.

Every ``.pt`` is read with ``torch.load(weights_only=True)``: a checkpoint can hold data, never code.
A folder is first written under a temporary name beside its destination and renamed into
place only when complete, so a crash or a full disk mid-save leaves the previous checkpoint
as it was. Run folders hold ``step_<N>/`` checkpoints and ``best/`` (lowest val loss).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .atomic import commit_tmp_folder, prepare_tmp_folder, write_json_atomic
from .config import Config, ConfigError, config_from_json
from .model import GPT

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.pt"
DCP_DIR = "dcp"  # a torch.distributed.checkpoint folder: {"model": weights, "optim": optimizer state}
REQUIRED_FILES = (CONFIG_FILE, META_FILE)  # plus the weights: WEIGHTS_FILE or DCP_DIR
STEP_PREFIX = "step_"
BEST_NAME = "best"
LAST_NAME = "last"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, half-written, or does not fit the model it is loaded into."""


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP/FSDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def without_aliases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the entries that alias an earlier entry (tied weights)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.device.type != "meta" and key in seen:
            continue
        seen.add(key)
        out[name] = tensor
    return out


def weights_for_saving(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop entries that alias an earlier entry (tied weights: safetensors refuses shared memory),
    strip ``torch.compile``'s ``_orig_mod.`` from names, and make tensors contiguous on the CPU."""
    state = without_aliases(state)
    return {name.replace("_orig_mod.", ""): t.detach().to("cpu").contiguous() for name, t in state.items()}


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds weights: ``model.safetensors`` or a DCP folder."""
    return (folder / WEIGHTS_FILE).is_file() or (folder / DCP_DIR / ".metadata").is_file()


def save_sharded(folder: Path, state: dict[str, Any]) -> None:
    """Every rank writes its shards of ``state`` (``parallel.sharded_state``) into ``folder/dcp``.
    Collective when a process group exists; DCP raises on every rank if one rank fails."""
    import torch.distributed.checkpoint as dcp

    dcp.save(state, checkpoint_id=str(folder / DCP_DIR))


def sharded_entries(folder: Path) -> set[str]:
    """The top-level entries (``"model"``, ``"optim"``) of ``folder``'s DCP checkpoint."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        keys = FileSystemReader(str(folder / DCP_DIR)).read_metadata().state_dict_metadata
    except Exception as err:  # a missing or truncated .metadata
        raise CheckpointError(f"Could not read the sharded checkpoint '{folder / DCP_DIR}': {err}") from err
    return {key.split(".", 1)[0] for key in keys}


def load_sharded(folder: Path, state: dict[str, Any], no_dist: bool = False) -> None:
    """Fill ``state`` (tensors shaped and sharded as this run's) in place from ``folder/dcp``;
    DCP reshards as needed. ``no_dist``: this rank reads alone, without the process group.

    Raises CheckpointError when the folder is unreadable or lacks an entry of ``state``."""
    import torch.distributed.checkpoint as dcp

    try:
        dcp.load(state, checkpoint_id=str(folder / DCP_DIR), no_dist=no_dist)
    except Exception as err:  # DCP wraps per-rank failures in its own exception types
        raise CheckpointError(f"Could not read the sharded checkpoint '{folder / DCP_DIR}': {err}") from err


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path``'s weights (``model.safetensors``, else its DCP folder, read by this process
    alone) into the unsharded ``model`` (keys missing from the file must be tied aliases of keys
    present, e.g. ``lm_head.weight`` of ``wte.weight``). Raises CheckpointError if they do not fit."""
    model = unwrap(model)
    weights_path = Path(path) / WEIGHTS_FILE
    if not weights_path.is_file() and (Path(path) / DCP_DIR).is_dir():
        load_sharded(Path(path), {"model": without_aliases(model.state_dict())}, no_dist=True)  # loads in place
        return
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"Could not read the weights '{weights_path}': {err}") from err
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"Weights in '{weights_path}' do not fit the model: {err}") from err
    params = dict(model.named_parameters(remove_duplicate=False))
    untied_missing = [
        name
        for name in missing
        if not (name in params and any(params[name] is params[k] for k in state if k in params))
    ]
    if untied_missing or unexpected:
        raise CheckpointError(
            f"Weights in '{weights_path}' do not fit the model: missing {untied_missing or 'none'}, "
            f"unexpected {unexpected or 'none'}."
        )


# --------------------------------------------------------------------------------------
# Atomic folder writes
# --------------------------------------------------------------------------------------


def write_folder_atomically(final: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_folder)`` and rename the folder to ``final`` once it returns.

    If ``write`` raises (a full disk, an interrupt) the temporary folder is removed, any earlier
    ``final`` is untouched, and the error propagates with a note saying so.
    """
    final = Path(final)
    tmp = prepare_tmp_folder(final)
    try:
        write(tmp)
        return commit_tmp_folder(final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception):
            kept = f"'{final}' was left as it was" if final.exists() else f"nothing was written at '{final}'"
            raise CheckpointError(f"Saving the checkpoint '{final}' failed ({type(err).__name__}: {err}); {kept}.") from err
        raise


# --------------------------------------------------------------------------------------
# Model checkpoints (weights + config + meta)
# --------------------------------------------------------------------------------------


def base_meta(config: Config, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """``meta`` plus the fields every checkpoint carries (tokenizer, dataset, version, time)."""
    out = {
        "step": 0,
        "tokens": 0,
        "val_loss": None,
        "tokenizer": config.model.tokenizer,
        "dataset": config.data.dataset,
        "ffn": config.model.ffn.kind,
        "quadgpt_version": __version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.update(meta or {})
    return out


def write_model_files(
    folder: Path, state: dict[str, torch.Tensor] | None, config: Config, meta: dict[str, Any] | None = None
) -> None:
    """Write ``model.safetensors`` (unless ``state`` is None: the weights are in ``dcp/``),
    ``config.json`` and ``meta.json`` into ``folder``."""
    full_meta = base_meta(config, meta)
    if state is not None:
        save_file(weights_for_saving(state), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    write_json_atomic(folder / CONFIG_FILE, config.to_dict())
    write_json_atomic(folder / META_FILE, full_meta)


def save_model_checkpoint(path: str | Path, model: nn.Module, config: Config, meta: dict[str, Any] | None = None) -> Path:
    """Atomically write a weights-only checkpoint of ``model`` (any DDP/compile wrapper is
    unwrapped) at folder ``path``; returns ``path``. Loadable by ``load_model``."""
    state = unwrap(model).state_dict()
    return write_folder_atomically(path, lambda tmp: write_model_files(tmp, state, config, meta))


# --------------------------------------------------------------------------------------
# Finding checkpoints
# --------------------------------------------------------------------------------------


def is_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in REQUIRED_FILES) and has_weights(folder)


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete ``step_<N>`` checkpoints, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX) :].isdigit()]
    return sorted((p for p in found if is_checkpoint(p)), key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = step_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder meant by ``path``.

    ``path`` may be a checkpoint folder; ``RUN/last`` (the newest ``step_<N>``); ``RUN/best``;
    or a run folder, meaning its ``best`` if there is one, else its newest ``step_<N>``.
    """
    path = Path(path)
    if is_checkpoint(path):
        return path
    if path.name == LAST_NAME and not path.exists():
        latest = latest_checkpoint(path.parent)
        if latest is None:
            raise CheckpointError(f"'{path}': no complete {STEP_PREFIX}<N> checkpoint in run folder '{path.parent}'.")
        return latest
    if path.is_dir():
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if not has_weights(path):
            missing.append(f"{WEIGHTS_FILE} (or {DCP_DIR}/)")
        if (path / WEIGHTS_FILE).exists() or (path / DCP_DIR).exists() or (path / META_FILE).exists():  # a run folder has config.json too
            raise CheckpointError(f"Checkpoint '{path}' is incomplete: missing {', '.join(missing)}.")
        if is_checkpoint(path / BEST_NAME):
            return path / BEST_NAME
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
        raise CheckpointError(
            f"'{path}' is neither a checkpoint (with {WEIGHTS_FILE}, {', '.join(REQUIRED_FILES)}) nor a run folder "
            f"holding '{BEST_NAME}/' or '{STEP_PREFIX}<N>/' checkpoints."
        )
    raise CheckpointError(f"Checkpoint '{path}' does not exist (give a checkpoint folder, a run folder, RUN/best or RUN/last).")


def resolve_resumable(path: str | Path) -> Path:
    """The full checkpoint ``--resume PATH`` continues from: a ``step_<N>`` folder as given, or
    the newest ``step_<N>`` of a run folder (``RUN`` or ``RUN/last``; never its weights-only best/).

    Raises CheckpointError when there is none, or when ``path`` holds weights only.
    """
    path = Path(path)
    if path.is_dir() and not is_checkpoint(path) and not (path / WEIGHTS_FILE).exists():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    found = resolve_checkpoint(path)
    if not (found / OPTIMIZER_FILE).is_file():
        raise CheckpointError(
            f"'{found}' holds weights only, not a training state to resume: resume from a run folder or one of its "
            f"{STEP_PREFIX}<N> checkpoints, or start a new run from these weights with train.init_from={found}."
        )
    return found


def read_config(folder: Path) -> Config:
    try:
        return config_from_json(json.loads((folder / CONFIG_FILE).read_text()))
    except (json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"'{folder / CONFIG_FILE}' is not a valid quadgpt config: {err}") from err


def read_meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / META_FILE).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{folder / META_FILE}' is not valid JSON: {err}") from err


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Config, dict[str, Any]]:
    """Resolve ``path``, rebuild the GPT from its ``config.json``, load its weights.

    Returns ``(model in eval mode on device, config, meta)``; ``meta["checkpoint"]`` is the folder.
    """
    folder = resolve_checkpoint(path)
    config = read_config(folder)
    meta = read_meta(folder)
    model = GPT(config.model)
    load_weights(model, folder)
    meta["checkpoint"] = str(folder)
    return model.to(device).eval(), config, meta


# --------------------------------------------------------------------------------------
# Compatibility
# --------------------------------------------------------------------------------------


# Model fields that change no tensor shape or meaning of a weight: free to differ on resume.
_RUNTIME_MODEL_FIELDS = {"model.dropout", "model.attention", "model.ffn.kernel", "model.ffn.freeze_base"}


def check_compatible(folder: str | Path, config: Config) -> None:
    """Raise CheckpointError listing every architecture field where ``config`` differs from the
    checkpoint at ``folder`` (dropout, attention backend and kernel choice may differ)."""
    from .run_settings import flatten

    saved = flatten(dataclasses.asdict(read_config(Path(folder)).model), "model.")
    wanted = flatten(dataclasses.asdict(config.model), "model.")
    diffs = [
        f"{key}: checkpoint {saved.get(key)!r}, config {wanted.get(key)!r}"
        for key in sorted(set(saved) | set(wanted))
        if key not in _RUNTIME_MODEL_FIELDS and saved.get(key) != wanted.get(key)
    ]
    if diffs:
        raise CheckpointError(
            f"Checkpoint '{folder}' has a different architecture than the config: " + "; ".join(diffs)
            + ". Use the checkpoint's settings (its config.json) or start a fresh run."
        )


# --------------------------------------------------------------------------------------
# Trainer state: optimizer, RNG, data position
# --------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain numbers (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_file(rank: int) -> str:
    return f"rank_{rank}.pt"


def save_rank_state(folder: Path, rank: int, loader_state: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write this process's RNG states and data-loader position into ``folder``."""
    torch.save({"rng": rng_state(), "loader": loader_state, **(extra or {})}, folder / rank_file(rank))


def load_pt(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and containers only."""
    if not path.is_file():
        raise CheckpointError(f"'{path}' is missing: this is not a full (resumable) checkpoint.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"Could not read '{path}' (corrupt, or not saved by quadgpt): {err}") from err


def load_rank_state(folder: Path, rank: int, world_size: int) -> dict[str, Any]:
    """This process's saved state; the checkpoint must come from a run with the same process count."""
    check_world_size(folder, world_size)
    return load_pt(folder / rank_file(rank))


def check_world_size(folder: Path, world_size: int) -> None:
    """CheckpointError unless the checkpoint at ``folder`` was written by ``world_size`` processes."""
    saved_world = read_meta(folder).get("world_size", 1)
    if saved_world != world_size:
        raise CheckpointError(
            f"Checkpoint '{folder}' was written by {saved_world} processes, this run has {world_size}: "
            "each process's data position and RNG are saved per rank, so resume with the same count "
            "(or start a new run from its weights with --train.init_from)."
        )
