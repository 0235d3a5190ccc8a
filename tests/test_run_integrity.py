"""Issue 12, for the commands that train and the ones that read their runs (train, eval ppl,
eval forgetting, compare, plot, sample):

- reuse: a reused or resumed result was made with the settings asked for now, and nothing
  appends to another run's record;
- what can be known before a run is refused before it (exit 2, one line, no folder created);
- the exit status says whether the result exists;
- settings come from defaults < config file < command line, and every documented argument form works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval import MICRO, make_task
from test_trainer import make_token_dataset, tiny_overrides

import quadgpt.trainer as trainer_module
from eval import compare, forgetting
from eval.cli import main as eval_main
from quadgpt import plotting, sample_cli
from quadgpt.config import load_config
from quadgpt.logging_utils import METRICS_FILE, read_metrics
from quadgpt.trainer import Trainer, main as train_main, train

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_token_dataset(tmp_path_factory.mktemp("data") / "tokens")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("tasks")
    return [str(make_task(root / "A", 1, 0)), str(make_task(root / "B", -1, 1))]


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------
# Reuse and resume: the same settings, or a refusal naming the difference
# --------------------------------------------------------------------------------------


def forgetting_argv(tasks, out: Path, *extra: str) -> list[str]:
    return ["forgetting", "--tasks", ",".join(tasks), "--steps", "2,2", "--seeds", "1", "--eval-every", "1",
            "--out", str(out), "--config", str(REPO_ROOT / "configs" / "tiny.toml"), *MICRO, *extra]


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--replay", "0.25"], "data.replay_fraction"),
        (["--steps", "3,2"], "train.max_steps"),
        (["--model.n_embd=64"], "model.n_embd"),
    ],
)
def test_forgetting_rerun_with_other_options_refuses_naming_them(tasks, tmp_path, capsys, extra, named):
    out = tmp_path / "f"
    assert eval_main(forgetting_argv(tasks, out)) == 0
    probe = (out / "seed1" / forgetting.PROBE_FILE).read_text()
    capsys.readouterr()
    assert eval_main(forgetting_argv(tasks, out, *extra)) == 2
    line = one_line_error(capsys.readouterr().err)
    assert named in line and str(out) in line
    assert (out / "seed1" / forgetting.PROBE_FILE).read_text() == probe  # the first run's record is untouched


def test_probe_json_records_the_settings_its_phases_used(tasks, tmp_path):
    out = tmp_path / "f"
    assert eval_main(forgetting_argv(tasks, out, "--replay", "0.5")) == 0
    assert eval_main(forgetting_argv(tasks, out, "--replay", "0.5")) == 0  # the same settings: reused
    probe = json.loads((out / "seed1" / forgetting.PROBE_FILE).read_text())
    phase_b = json.loads(next((out / "seed1").glob("phase1-*/config.json")).read_text())
    assert probe["settings"]["replay_fraction"] == phase_b["data"]["replay_fraction"] == 0.5
    assert probe["phase_configs"][1]["data"] == phase_b["data"]


def compare_argv(tasks, out: Path, *extra: str) -> list[str]:
    return ["--variants", "mlp-gelu", "--seeds", "1", "--task-a", tasks[0], "--task-b", tasks[1], "--steps-a", "2",
            "--steps-b", "2", "--eval-every-b", "1", "--out", str(out), *MICRO, *extra]


def test_compare_rerun_with_other_settings_refuses_naming_them(tasks, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(compare_argv(tasks, out)) == 0
    results = (out / "results.json").read_text()
    capsys.readouterr()
    assert compare.main(compare_argv(tasks, out, "--steps-b", "3")) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "train.max_steps" in line
    assert compare.main(compare_argv(tasks, out, "--train.lr=5e-3")) == 2
    assert "train.lr" in capsys.readouterr().err
    assert (out / "results.json").read_text() == results


def test_run_killed_before_its_first_checkpoint_starts_a_fresh_record(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = [{"kind": "eval", "step": 0, "tokens": 0, "elapsed": 0.1, "val_loss": 9.0},
            {"kind": "train", "step": 1, "tokens": 128, "elapsed": 0.2, "loss": 9.5}]
    (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in dead))
    train(load_config(None, tiny_overrides(data, run, max_steps=2, resume="auto")))
    steps = [(r["kind"], r["step"]) for r in read_metrics(run)]
    assert steps.count(("eval", 0)) == 1 and steps.count(("train", 1)) == 1
    assert 9.0 not in [r.get("val_loss") for r in read_metrics(run)]
    kept = [p for p in run.iterdir() if p.name.startswith("metrics") and p.name != METRICS_FILE]
    assert len(kept) == 1 and kept[0].read_text().count("\n") == 2  # the dead run's record is kept aside, not deleted


@pytest.mark.parametrize(
    "override, named",
    [("--train.lr=5e-3", "train.lr"), ("--data.val_windows=4", "data.val_windows"), ("--train.seed=7", "train.seed")],
)
def test_resume_with_a_different_config_refuses_naming_the_keys(data, tmp_path, capsys, override, named):
    run = tmp_path / "run"
    assert train_main(tiny_overrides(data, run, max_steps=4)) == 0
    record = {name: (run / name).read_text() for name in (METRICS_FILE, "config.json")}
    capsys.readouterr()
    assert train_main(tiny_overrides(data, run, max_steps=4, resume="auto") + [override]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert named in line
    assert {name: (run / name).read_text() for name in record} == record  # refused before touching the run


def test_resume_from_weights_only_says_what_would_work(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(tiny_overrides(data, run, max_steps=4)) == 0
    capsys.readouterr()
    assert train_main(["--resume", str(run / "best"), *tiny_overrides(data, tmp_path / "other", max_steps=6)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "weights only" in line and "train.init_from" in line


def test_resume_with_another_dataset_of_the_same_size_refuses(data, tmp_path, capsys):
    run = tmp_path / "run"
    other = make_token_dataset(tmp_path / "other", seed=5)
    assert train_main(tiny_overrides(data, run, max_steps=4)) == 0
    assert train_main(tiny_overrides(other, run, max_steps=4, resume="auto")) == 2
    assert "data.dataset" in capsys.readouterr().err


def test_resume_may_extend_the_run_length(data, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(data, run, max_steps=4)))
    summary = train(load_config(None, tiny_overrides(data, run, max_steps=6, resume="auto", log_interval=2)))
    assert summary["steps"] == 6


# --------------------------------------------------------------------------------------
# What can be known before a run is refused before it
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--model.n_embd=30", "--model.n_head=4"], "model.n_embd"),
        (["--model.vocab_size=32"], "model.vocab_size"),
        (["--model.block_size=5000"], "block_size"),
        (["--train.warmup_steps=20"], "train.warmup_steps"),
        (["--train.global_batch_tokens=100"], "global_batch_tokens"),
        (["--train.lr=0"], "train.lr"),
        (["--model.ffn.kind=mpl"], "model.ffn.kind"),
        (["--train.max_steps=-1"], "train.max_steps"),
        (["--data.replay_fraction=0.5"], "data.replay_dataset"),
        (["--model.ffn.kind=quadratic", "--model.ffn.rank=0"], "model.ffn.rank"),
        (["--model.ffn.kind=kan", "--model.ffn.grid_size=0"], "model.ffn.grid_size"),
        (["--model.ffn.kind=kan", "--model.ffn.spline_order=-1"], "model.ffn.spline_order"),
        (["--model.ffn.freeze_base=true"], "model.ffn.freeze_base"),
        (["--model.ffn.hidden=-8"], "model.ffn.hidden"),
        (["--model.dropout=1.5"], "model.dropout"),
        (["--model.n_layer=0"], "model.n_layer"),
        (["--train.beta1=1.0"], "train.beta1"),
        (["--train.weight_decay=-0.1"], "train.weight_decay"),
        (["--train.max_time=-5"], "train.max_time"),
        (["--data.val_windows=0"], "data.val_windows"),
        (["--data.dataset=/nonexistent/data"], "does not exist"),
    ],
)
def test_train_refuses_bad_settings_before_creating_anything(data, tmp_path, capsys, overrides, message):
    run = tmp_path / "run"
    assert train_main(tiny_overrides(data, run) + overrides) == 2
    line = one_line_error(capsys.readouterr().err)
    assert message in line
    assert not run.exists()


def test_replay_checks_see_the_replay_data(data, tmp_path, capsys):
    small = make_token_dataset(tmp_path / "small", n_train=20, n_val=4_000)
    run = tmp_path / "run"
    extra = [f"--data.replay_dataset={small}", "--data.replay_fraction=0.5"]
    assert train_main(tiny_overrides(data, run) + extra) == 2
    assert "small" in one_line_error(capsys.readouterr().err)
    assert not run.exists()


def test_too_little_disk_for_one_checkpoint_is_refused_up_front(data, tmp_path, capsys, monkeypatch):
    import shutil

    import quadgpt.validate as validate

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(validate.shutil, "disk_usage", lambda path: usage._replace(free=10_000))
    run = tmp_path / "run"
    assert train_main(tiny_overrides(data, run)) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "free" in line and "checkpoint" in line
    assert not run.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", ""], "--seeds"),
        (["--replay", "0.01"], "replay"),  # 1% of a batch of 4 rounds to no replayed sequence
        (["--replay", "1.5"], "replay"),
        (["--steps", "2,-1"], "step"),
        (["--freeze-base"], "KAN"),
        (["--model.n_embd=31"], "model.n_embd"),
        (["--train.warmup_steps=5"], "train.warmup_steps"),
        (["--eval-every", "0"], "eval_every"),
    ],
)
def test_forgetting_refuses_bad_settings_before_phase_a(tasks, tmp_path, capsys, extra, message):
    out = tmp_path / "f"
    assert eval_main(forgetting_argv(tasks, out, *extra)) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps-a", "-1"], "step"),
        (["--replay", "1.5"], "replay"),
        (["--seeds", ","], "--seeds"),
        (["--model.n_head=3"], "model.n_embd"),
        (["--variants", "mlp-gelu,bad=model.ffn.kind=kan;model.ffn.grid_size=0"], "model.ffn.grid_size"),
    ],
)
def test_compare_refuses_bad_settings_before_any_run(tasks, tmp_path, capsys, extra, message):
    out = tmp_path / "cmp"
    assert compare.main(compare_argv(tasks, out, *extra)) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not out.exists()


# --------------------------------------------------------------------------------------
# Exit status
# --------------------------------------------------------------------------------------


def fail_saves(monkeypatch, prefix: str = ".tmp-step_", after: int = 0) -> None:
    real_write, calls = trainer_module.write_model_files, []

    def disk_full(folder, *args, **kwargs):
        if folder.name.startswith(prefix):
            calls.append(folder.name)
            if len(calls) > after:
                raise OSError(28, "No space left on device")
        return real_write(folder, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "write_model_files", disk_full)


def test_train_whose_final_checkpoint_failed_exits_1(data, tmp_path, capsys, monkeypatch):
    fail_saves(monkeypatch, after=1)  # step 4 saves, step 8 (the end) does not
    assert train_main(tiny_overrides(data, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "step_00000004" in err.splitlines()[-1]


def test_signal_whose_save_failed_is_a_failure(data, tmp_path, monkeypatch):
    fail_saves(monkeypatch)
    trainer = Trainer(load_config(None, tiny_overrides(data, tmp_path / "run")))
    trainer.stop_signal = "SIGTERM"
    with pytest.raises(trainer_module.ResultLost, match="SIGTERM"):
        trainer_module.finish(trainer.run())


def test_failed_best_checkpoint_is_a_failure(data, tmp_path, capsys, monkeypatch):
    real_write = trainer_module.write_model_files

    def best_fails(folder, *args, **kwargs):
        if Path(folder).name.endswith("best"):  # best/ or its temporary folder
            raise OSError(28, "No space left on device")
        return real_write(folder, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "write_model_files", best_fails)
    assert train_main(tiny_overrides(data, tmp_path / "run")) == 1
    assert "best" in capsys.readouterr().err.splitlines()[-1]


def test_forgetting_phase_whose_checkpoint_failed_exits_1(tasks, tmp_path, capsys, monkeypatch):
    fail_saves(monkeypatch)
    out = tmp_path / "f"
    assert eval_main(forgetting_argv(tasks, out)) == 1
    assert not list(out.glob("seed1/phase1-*"))  # phase B did not start from weights that do not exist
    assert not list(out.glob("seed1/phase0-*/summary.json"))


def test_compare_run_that_fails_exits_1_naming_it(tasks, tmp_path, capsys, monkeypatch):
    def diverges(config):
        raise trainer_module.TrainingDiverged("5 consecutive non-finite steps at step 1 (train.max_bad_steps).")

    monkeypatch.setattr(trainer_module, "train", diverges)
    assert compare.main(compare_argv(tasks, tmp_path / "cmp")) == 1
    assert "mlp-gelu seed 1" in capsys.readouterr().err


def test_plot_that_cannot_be_written_exits_nonzero(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(data, run, max_steps=2)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert plotting.main([str(run), "--out", str(blocker / "loss.png")]) == 1
    assert "loss.png" in one_line_error(capsys.readouterr().err)


# --------------------------------------------------------------------------------------
# Settings come from where the docs say; every documented argument form works
# --------------------------------------------------------------------------------------


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_train_order_is_defaults_then_file_then_command_line(data, tmp_path):
    config = write_toml(tmp_path / "c.toml", "[train]\nlr = 3e-3\nmin_lr = 1e-4\nweight_decay = 0.05\n")
    run = tmp_path / "run"
    args = [a for a in tiny_overrides(data, run, max_steps=2) if not a.startswith(("--train.lr=", "--train.min_lr="))]
    assert train_main(["--config", str(config), *args, "--train.lr", "4e-3"]) == 0
    saved = json.loads((run / "config.json").read_text())["train"]
    assert (saved["lr"], saved["min_lr"], saved["weight_decay"], saved["beta2"]) == (4e-3, 1e-4, 0.05, 0.95)


def test_resume_accepts_a_run_folder_as_its_help_says(data, tmp_path):
    run = tmp_path / "run"
    assert train_main(tiny_overrides(data, run, max_steps=4)) == 0
    assert (run / "best").is_dir()
    assert train_main(["--resume", str(run), *tiny_overrides(data, run, max_steps=6)]) == 0
    assert max(r["step"] for r in read_metrics(run)) == 6


def test_compare_config_file_beats_its_builtin_budget(tasks, tmp_path):
    config = write_toml(tmp_path / "c.toml", "[train]\nbatch_size = 2\nwarmup_steps = 1\n[data]\nval_windows = 3\n")
    out = tmp_path / "cmp"
    micro = [a for a in MICRO if not a.startswith(("--train.batch_size", "--data.val_windows"))]
    argv = [a for a in compare_argv(tasks, out) if a not in MICRO] + micro + ["--config", str(config)]
    assert compare.main(argv) == 0
    phase_a = json.loads(next(out.glob("runs/*/seed1/phase0-*/config.json")).read_text())
    assert phase_a["train"]["batch_size"] == 2 and phase_a["data"]["val_windows"] == 3
    assert phase_a["train"]["warmup_steps"] == 1


def test_forgetting_order_is_defaults_then_file_then_command_line(tasks, tmp_path):
    config = write_toml(tmp_path / "c.toml", "[train]\nbatch_size = 2\nlr = 3e-3\n")
    out = tmp_path / "f"
    micro = [a for a in MICRO if not a.startswith("--train.batch_size")]
    argv = [a for a in forgetting_argv(tasks, out) if a not in MICRO and a != str(REPO_ROOT / "configs" / "tiny.toml")]
    argv = [a for a in argv if a != "--config"] + micro + ["--config", str(config), "--train.lr=4e-3"]
    assert eval_main(argv) == 0
    phase_a = json.loads(next(out.glob("seed1/phase0-*/config.json")).read_text())
    assert phase_a["train"]["batch_size"] == 2 and phase_a["train"]["lr"] == 4e-3
    assert phase_a["model"]["n_embd"] == 32  # MICRO on the command line beats the file's default width


@pytest.mark.parametrize("form", ["run", "run/best", "run/last", "step", "run-without-best"])
def test_eval_ppl_accepts_every_model_form_its_help_names(data, tmp_path, capsys, form):
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(data, run, max_steps=4)))
    step = next(run.glob("step_*"))
    if form == "run-without-best":
        import shutil

        shutil.rmtree(run / "best")
    path = {"run": run, "run/best": run / "best", "run/last": run / "last", "step": step,
            "run-without-best": run}[form]
    out = tmp_path / "ppl.json"
    assert eval_main(["ppl", str(path), "--data", str(data), "--windows", "4", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["tokens"] > 0


def test_sample_takes_defaults_from_the_checkpoint_then_flags(data, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = tiny_overrides(data, run, max_steps=2) + ["--sample.max_new_tokens=5", "--sample.temperature=0",
                                                          "--sample.prompt=A"]
    train(load_config(None, overrides))
    capsys.readouterr()
    assert sample_cli.main([str(run), "--ignore-eot"]) == 0
    text = capsys.readouterr().out.split(sample_cli.SEPARATOR)[0]
    assert text.startswith("A") and len(text) == 1 + 5  # each of the 64 token ids decodes to one character
    assert sample_cli.main([str(run), "--ignore-eot", "--max-new-tokens", "3", "--prompt", "B"]) == 0
    assert len(capsys.readouterr().out.split(sample_cli.SEPARATOR)[0]) == 1 + 3


def test_sample_bad_input_exits_2(tmp_path, capsys):
    assert sample_cli.main([str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_plot_writes_the_format_its_file_name_asks_for(data, tmp_path, suffix, magic):
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(data, run, max_steps=2)))
    out = tmp_path / f"loss{suffix}"
    assert plotting.main([str(run), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


def test_plot_refuses_an_unknown_format_before_drawing(data, tmp_path, capsys):
    assert plotting.main([str(tmp_path / "no-such-run"), "--out", str(tmp_path / "loss.txt")]) == 2
    assert ".txt" in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "loss.txt").exists()
