"""Checkpoint folders: round trip, atomic writes, resolution, architecture checks, no pickled code."""

from __future__ import annotations

import pickle

import pytest
import torch
from helpers import tiny_model_config

from quadgpt.atomic import tmp_sibling
from quadgpt.checkpoint import (
    CheckpointError,
    check_compatible,
    load_model,
    load_pt,
    resolve_checkpoint,
    rng_state,
    save_model_checkpoint,
    set_rng_state,
    write_folder_atomically,
    write_model_files,
)
from quadgpt.config import Config
from quadgpt.model import GPT


def make(kind: str = "mlp", **overrides) -> tuple[GPT, Config]:
    config = Config(model=tiny_model_config(kind, **overrides))
    return GPT(config.model), config


@pytest.mark.parametrize("kind", ["mlp", "kan"])
def test_round_trip_keeps_weights_tying_and_meta(tmp_path, kind):
    model, config = make(kind)
    save_model_checkpoint(tmp_path / "ck", model, config, {"step": 7, "val_loss": 1.5})
    loaded, loaded_config, meta = load_model(tmp_path / "ck")
    assert loaded_config == config
    assert meta["step"] == 7 and meta["val_loss"] == 1.5 and meta["tokenizer"] == "gpt2"
    assert loaded.lm_head.weight is loaded.wte.weight
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randint(0, config.model.vocab_size, (2, 8))
    assert torch.equal(model.eval()(x)[0], loaded(x)[0])


def test_save_unwraps_compiled_model(tmp_path):
    model, config = make()
    save_model_checkpoint(tmp_path / "ck", torch.compile(model), config)
    loaded, _, _ = load_model(tmp_path / "ck")
    assert torch.equal(loaded.wte.weight, model.wte.weight)


def test_resolve_run_folder_best_last(tmp_path):
    model, config = make()
    run = tmp_path / "run"
    for step in (2, 10):
        save_model_checkpoint(run / f"step_{step:08d}", model, config, {"step": step})
    assert resolve_checkpoint(run) == run / "step_00000010"  # no best: newest step
    assert resolve_checkpoint(run / "last") == run / "step_00000010"
    save_model_checkpoint(run / "best", model, config, {"step": 2})
    assert resolve_checkpoint(run) == run / "best"
    assert resolve_checkpoint(run / "best") == run / "best"
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


def test_incomplete_checkpoint_is_named(tmp_path):
    model, config = make()
    save_model_checkpoint(tmp_path / "ck", model, config)
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete: missing model.safetensors"):
        load_model(tmp_path / "ck")


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path):
    old_model, config = make()
    target = tmp_path / "ck"
    save_model_checkpoint(target, old_model, config, {"step": 1})
    new_model, _ = make()
    assert not torch.equal(new_model.wte.weight, old_model.wte.weight)

    def write_then_fail(folder):
        write_model_files(folder, new_model.state_dict(), config, {"step": 2})  # weights fully written...
        raise OSError(28, "No space left on device")  # ...then the disk fills up

    with pytest.raises(CheckpointError, match="No space left.*was left as it was"):
        write_folder_atomically(target, write_then_fail)
    loaded, _, meta = load_model(target)
    assert meta["step"] == 1 and torch.equal(loaded.wte.weight, old_model.wte.weight)
    assert not tmp_sibling(target).exists()


def test_crash_mid_save_is_ignored_by_resolution(tmp_path):
    """A process killed mid-save leaves only a .tmp- folder, which no lookup ever picks."""
    model, config = make()
    run = tmp_path / "run"
    save_model_checkpoint(run / "step_00000004", model, config)
    half = tmp_sibling(run / "step_00000008")
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 10)
    assert resolve_checkpoint(run) == run / "step_00000004"


def test_architecture_mismatch_lists_fields(tmp_path):
    model, config = make("mlp")
    save_model_checkpoint(tmp_path / "ck", model, config)
    other = Config(model=tiny_model_config("quadratic", n_embd=64))
    with pytest.raises(CheckpointError) as err:
        check_compatible(tmp_path / "ck", other)
    assert "model.ffn.kind: checkpoint 'mlp', config 'quadratic'" in str(err.value)
    assert "model.n_embd: checkpoint 32, config 64" in str(err.value)
    same_but_dropout = Config(model=tiny_model_config("mlp", dropout=0.1))
    check_compatible(tmp_path / "ck", same_but_dropout)  # dropout changes no weight: allowed


def test_pt_files_never_unpickle_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "optimizer.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state": Evil()}, handle)
    with pytest.raises(CheckpointError, match="Could not read"):
        load_pt(path)


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    import random

    import numpy as np

    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_pt(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
