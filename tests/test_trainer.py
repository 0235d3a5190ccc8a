"""The training loop on CPU: exact resume, non-finite steps, signals, failed saves, config errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model_config

from quadgpt.checkpoint import load_model, resolve_checkpoint
from quadgpt.config import ConfigError, load_config
from quadgpt.data import FORMAT_NAME, FORMAT_VERSION, META_FILE, shard_name
from quadgpt.logging_utils import read_metrics
from quadgpt.model import GPT
from quadgpt.schedule import lr_at
from quadgpt.trainer import Trainer, TrainingDiverged, decayed_names, main, param_groups, train

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB = 64


def make_token_dataset(folder: Path, n_train: int = 20_000, n_val: int = 4_000, seed: int = 0) -> Path:
    """A prepared dataset (quadgpt.data's format) of a learnable stream: each token is its
    predecessor plus 0, 1 or 2 (mod VOCAB), so the loss falls within a few steps."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        tokens = np.cumsum(rng.integers(0, 3, size=n)) % VOCAB
        name = shard_name(split, 0)
        tokens.astype(np.uint16).tofile(folder / name)
        splits[split] = {"shards": [{"file": name, "tokens": n}], "tokens": n}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "dtype": "uint16", "vocab_size": VOCAB,
            "splits": splits}
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


def tiny_overrides(data: Path, out: Path, **train) -> list[str]:
    """Command-line overrides for a 2-layer width-32 model that takes milliseconds per step."""
    base = {
        "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
        "model.vocab_size": VOCAB, "data.dataset": str(data), "data.val_windows": 8,
        "train.out_dir": str(out), "train.device": "cpu", "train.batch_size": 4, "train.max_steps": 8,
        "train.warmup_steps": 2, "train.lr": 1e-2, "train.min_lr": 1e-3, "train.log_interval": 1,
        "train.eval_interval": 4, "train.ckpt_interval": 4,
    }
    base.update({k if "." in k else f"train.{k}": v for k, v in train.items()})
    return [f"--{k}={v}" for k, v in base.items()]


def config_for(data: Path, out: Path, **train):
    return load_config(None, tiny_overrides(data, out, **train))


def losses(run: Path, key: str = "loss") -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(run) if key in r}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_token_dataset(tmp_path_factory.mktemp("data") / "tokens")


def test_training_lowers_loss_and_writes_run_folder(data, tmp_path):
    summary = train(config_for(data, tmp_path / "run", max_steps=12, eval_interval=6, ckpt_interval=6, keep_last=1))
    val = losses(tmp_path / "run", "val_loss")
    assert val[12] < val[0] - 0.5, val  # the stream is easy: the loss must drop
    assert summary["steps"] == 12 and summary["tokens"] == 12 * 4 * 32 and summary["stopped_by"] == "max_steps"
    assert summary["final_val_loss"] == pytest.approx(val[12]) and summary["best_val_loss"] == min(val.values())
    assert summary["tokens_per_s"] > 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["best", "step_00000012"]  # keep_last=1
    assert summary["last_checkpoint"] == str(run / "step_00000012")
    _, _, meta = load_model(run / "best")
    assert meta["val_loss"] == pytest.approx(min(val.values()))
    record = [r for r in read_metrics(run) if r["kind"] == "train"][-1]
    assert {"step", "tokens", "elapsed", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(record)


def test_max_tokens_stops_first_and_sets_the_schedule_horizon(data, tmp_path):
    config = config_for(data, tmp_path / "run", max_steps=50, max_tokens=5 * 4 * 32 - 1, eval_interval=100)
    summary = train(config)
    assert summary["stopped_by"] == "max_tokens" and summary["steps"] == 5
    lrs = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"}
    assert lrs[5] == pytest.approx(lr_at(4, config.train, 5))  # the cosine spans 5 steps, not 50
    assert lr_at(4, config.train, 5) < 0.5 * lr_at(4, config.train, 50)


def test_resume_after_sigterm_repeats_the_uninterrupted_run(data, tmp_path):
    """Dropout on and accumulation of 2: weights, optimizer, loader and RNG states must all resume."""
    settings = dict(max_steps=8, global_batch_tokens=2 * 4 * 32)
    full = config_for(data, tmp_path / "full", **settings)
    full.model.dropout = 0.1
    train(full)

    interrupted = config_for(data, tmp_path / "part", **settings)
    interrupted.model.dropout = 0.1
    trainer = Trainer(interrupted)
    real_loss, calls = trainer.compute_loss, []

    def signal_at_step_3(x, y):
        calls.append(1)
        if len(calls) == 2 * 3:  # the last micro-batch of step 3
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(x, y)

    trainer.compute_loss = signal_at_step_3
    summary = trainer.run()
    assert summary["stopped_by"] == "signal (SIGTERM)" and summary["steps"] == 3
    assert summary["last_checkpoint"].endswith("step_00000003")

    resumed = config_for(data, tmp_path / "part", resume="auto", **settings)
    resumed.model.dropout = 0.1
    assert train(resumed)["steps"] == 8
    expected, got = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(got) == list(range(1, 9))  # no step logged twice
    for step in range(1, 9):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    assert losses(tmp_path / "part", "val_loss")[8] == pytest.approx(losses(tmp_path / "full", "val_loss")[8], abs=1e-6)


def test_non_finite_steps_are_skipped_and_counted(data, tmp_path):
    trainer = Trainer(config_for(data, tmp_path / "run", max_steps=6, max_bad_steps=3))
    real_loss, calls, snapshots = trainer.compute_loss, [], []

    def nan_on_calls_3_and_4(x, y):
        calls.append(1)
        if len(calls) in (3, 5):  # weights before the two bad steps, and after them
            snapshots.append([p.detach().clone() for p in trainer.raw_model.parameters()])
        loss = real_loss(x, y)
        return loss * float("nan") if len(calls) in (3, 4) else loss

    trainer.compute_loss = nan_on_calls_3_and_4
    summary = trainer.run()
    assert summary["skipped_steps"] == 2 and summary["steps"] == 6 and len(calls) == 8
    assert all(torch.equal(a, b) for a, b in zip(*snapshots))  # skipped: no update, no NaN in the weights
    assert all(math.isfinite(v) for v in losses(tmp_path / "run").values())
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())


def test_consecutive_non_finite_steps_stop_naming_last_checkpoint(data, tmp_path):
    trainer = Trainer(config_for(data, tmp_path / "run", max_steps=20, ckpt_interval=2, max_bad_steps=3))
    real_loss, calls = trainer.compute_loss, []

    def nan_after_step_5(x, y):
        calls.append(1)
        loss = real_loss(x, y)
        return loss * float("inf") if len(calls) > 5 else loss

    trainer.compute_loss = nan_after_step_5
    with pytest.raises(TrainingDiverged, match=r"3 consecutive non-finite steps at step 5.*step_00000004"):
        trainer.run()
    assert resolve_checkpoint(tmp_path / "run" / "last").name == "step_00000004"


def test_failed_save_keeps_previous_checkpoint(data, tmp_path, monkeypatch, capsys):
    import quadgpt.trainer as trainer_module

    real_write, saves = trainer_module.write_model_files, []

    def disk_full_after_first_checkpoint(folder, *args, **kwargs):
        if folder.name.startswith(".tmp-step_"):
            saves.append(folder.name)
            if len(saves) >= 2:  # the periodic and the final save at step 8
                raise OSError(28, "No space left on device")
        return real_write(folder, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "write_model_files", disk_full_after_first_checkpoint)
    with pytest.raises(trainer_module.ResultLost, match="final checkpoint .step 8.*step_00000004") as lost:
        train(config_for(data, tmp_path / "run", max_steps=8, ckpt_interval=4))
    summary = lost.value.summary
    err = capsys.readouterr().err
    assert "saving checkpoint" in err and "No space left" in err and "step_00000004) is intact" in err
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(("step_", ".tmp"))) == ["step_00000004"]
    assert summary["last_checkpoint"] == str(run / "step_00000004")
    load_model(run / "step_00000004")


def test_init_from_starts_at_step_zero_from_the_weights(data, tmp_path):
    first = train(config_for(data, tmp_path / "a", max_steps=4))
    second = train(config_for(data, tmp_path / "b", max_steps=2, init_from=str(tmp_path / "a")))
    assert second["steps"] == 2
    assert losses(tmp_path / "b", "val_loss")[0] == pytest.approx(first["best_val_loss"], abs=1e-6)


def test_extra_val_sets_and_replay_are_logged(data, tmp_path):
    other = make_token_dataset(tmp_path / "other", seed=1)
    config = config_for(data, tmp_path / "run", max_steps=4)
    config.data.extra_val = f"other={other}"
    config.data.replay_dataset = str(other)
    config.data.replay_fraction = 0.5
    trainer = Trainer(config)
    x, _ = trainer.next_batch()
    assert x.shape == (4, 32)
    trainer.run()
    evals = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "eval"]
    assert all("val_loss/other" in r for r in evals)


def test_config_errors_name_the_field(data, tmp_path):
    with pytest.raises(ConfigError, match="global_batch_tokens=100 is not a multiple"):
        Trainer(config_for(data, tmp_path / "r1", global_batch_tokens=100))
    with pytest.raises(ConfigError, match="data.extra_val entry 'oops'"):
        config = config_for(data, tmp_path / "r2")
        config.data.extra_val = "oops"
        Trainer(config)
    with pytest.raises(ConfigError, match="no end"):
        Trainer(config_for(data, tmp_path / "r3", max_steps=0))
    train(config_for(data, tmp_path / "r4", max_steps=1, warmup_steps=1))
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume auto"):
        Trainer(config_for(data, tmp_path / "r4", max_steps=1, warmup_steps=1))
    wider = load_config(None, tiny_overrides(data, tmp_path / "r4", resume="auto") + ["--model.n_embd=64"])
    with pytest.raises(ConfigError, match="model.n_embd: 32 there, 64 now"):
        Trainer(wider)


def test_weight_decay_groups_see_through_wrappers():
    model = GPT(tiny_model_config("mlp"))
    decayed = decayed_names(model)
    assert "wte.weight" in decayed and not any(".ln_" in n or n.endswith(".bias") for n in decayed)
    groups = param_groups(torch.compile(model), 0.1, decayed)  # names gain a _orig_mod. prefix
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters() if p.dim() >= 2}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.parameters() if p.dim() < 2}


def test_main_reports_bad_keys_with_exit_code_2(data, tmp_path, capsys):
    assert main(tiny_overrides(data, tmp_path / "run") + ["--train.max_step=3"]) == 2
    assert "Did you mean 'max_steps'" in capsys.readouterr().err


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules_warm_up_and_end_at_their_floor(data, tmp_path, schedule):
    cfg = config_for(data, tmp_path, schedule=schedule, warmup_steps=10, lr=1.0, min_lr=0.1, decay_frac=0.2).train
    assert lr_at(0, cfg, 100) == pytest.approx(0.1) and lr_at(9, cfg, 100) == pytest.approx(1.0)
    end = {"cosine": 0.1, "wsd": 0.1, "constant": 1.0}[schedule]
    assert lr_at(100, cfg, 100) == pytest.approx(end)
    if schedule == "wsd":
        assert lr_at(79, cfg, 100) == 1.0 and lr_at(90, cfg, 100) == pytest.approx(0.55)
    if schedule == "cosine":
        assert lr_at(55, cfg, 100) == pytest.approx(0.55)


def test_sigterm_to_train_py_saves_and_exits_0(data, tmp_path):
    run = tmp_path / "run"
    args = tiny_overrides(data, run, max_steps=100_000, ckpt_interval=100_000, eval_interval=100_000)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not any(r["kind"] == "train" for r in _safe_metrics(run)):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    last = resolve_checkpoint(run / "last")
    assert 0 < int(last.name.split("_")[1]) < 100_000 and "SIGTERM" in out


def _safe_metrics(run: Path) -> list[dict]:
    try:
        return read_metrics(run)
    except FileNotFoundError:
        return []


def test_plot_draws_several_runs_into_one_png(data, tmp_path):
    from quadgpt.plotting import main as plot_main

    for name in ("a", "b"):
        train(config_for(data, tmp_path / name, max_steps=2, eval_interval=1))
    out = tmp_path / "plots" / "loss.png"
    assert plot_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert plot_main([str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_demo_trains_compares_with_unigram_and_samples(data, tmp_path, capsys):
    from quadgpt.demo import main as demo_main

    args = [a for a in tiny_overrides(data, tmp_path / "ignored", max_steps=30, eval_interval=30)
            if not a.startswith("--train.out_dir")]
    assert demo_main(["--out", str(tmp_path / "demo"), "--prompt", "A=", *args]) == 0  # ids 32, 28 < VOCAB
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "vs unigram baseline" in x)
    val, baseline = (float(w) for w in (line.split("best val loss ")[1].split()[0], line.split("baseline ")[1].split()[0]))
    assert val < baseline - 1.0, line  # the stream is far more predictable than its token frequencies
    assert "--- sample from" in out and (tmp_path / "demo" / "best").is_dir()


def test_demo_reports_unpreparable_source(tmp_path, capsys):
    from quadgpt.demo import main as demo_main

    code = demo_main(["--out", str(tmp_path / "demo"), f"--data.dataset={tmp_path / 'data'}",
                      f"--data.source={tmp_path / 'no_such_corpus.txt'}"])
    assert code == 2 and "no_such_corpus.txt" in capsys.readouterr().err


def test_peak_table_prefers_specific_names_and_honours_override(monkeypatch):
    from quadgpt.logging_utils import mfu, peak_tflops

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert peak_tflops(cuda) == 756.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert peak_tflops(cuda) == 989.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mystery GPU")
    assert peak_tflops(cuda) is None and peak_tflops(cuda, override=100.0) == 100.0
    assert peak_tflops(torch.device("cpu")) is None
    # the reference point: 480k tokens/s of gpt2-small on one H100 SXM is 41.7% by nanoGPT's formula
    with torch.device("meta"):
        gpt2_small = GPT(load_config(REPO_ROOT / "configs" / "gpt2-small.toml").model)
    assert mfu(gpt2_small.flops_per_token(1024), 480_000, 989.0) == pytest.approx(0.417, abs=0.003)
    assert mfu(1e9, 1000.0, 100.0, world_size=2) == pytest.approx(1e12 / 200e12)


def test_run_folder_never_lands_on_what_the_run_reads(data, tmp_path, capsys):
    """Issue 12, fault 1: train.out_dir that is, holds or lies inside the data, an extra val set,
    or the init_from checkpoint is refused before anything is written."""
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    for out in (data, data.parent, data / "run"):
        assert main(tiny_overrides(data, out)) == 2 and "the input" in capsys.readouterr().err
    assert main(tiny_overrides(tmp_path / "other", data) + [f"--data.extra_val=a:{data}"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before
    train(config_for(data, tmp_path / "first", max_steps=2))
    best = tmp_path / "first" / "best"
    saved = (best / "model.safetensors").read_bytes()
    argv = tiny_overrides(data, tmp_path / "first", max_steps=2, init_from=str(best))
    assert main(argv) == 2 and "contains the input" in capsys.readouterr().err
    assert (best / "model.safetensors").read_bytes() == saved


def test_plot_never_overwrites_an_input_or_a_file_it_did_not_write(data, tmp_path, capsys):
    from quadgpt.plotting import main as plot_main

    run = tmp_path / "run"
    train(config_for(data, run, max_steps=2, eval_interval=1))
    metrics = (run / "metrics.jsonl").read_text()
    assert plot_main([str(run), "--out", str(run / "metrics.jsonl")]) == 2  # not even a .png
    notes = tmp_path / "notes.png"
    notes.write_text("my own file")
    assert plot_main([str(run), "--out", str(notes)]) == 2 and notes.read_text() == "my own file"
    assert "not a plot quadgpt wrote" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == metrics
    out = run / "loss.png"  # beside the run's files is fine, and a second plot replaces the first
    assert plot_main([str(run), "--out", str(out)]) == 0 and plot_main([str(run), "--out", str(out)]) == 0
