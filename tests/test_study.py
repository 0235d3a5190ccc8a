"""The study pipeline end to end at toy scale (CI): byte-level data, an lr sweep, 2 seeds of
four variants (with the frozen-base KAN), the report with CIs, ordering and sweep, and a rerun
that reuses every finished run."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from data_prep.prepare import main as prepare_main
from eval import study

FEW_MODULES = ("bisect.py", "colorsys.py", "fnmatch.py", "shlex.py", "this.py", "textwrap.py")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def byte_tasks(tmp_path_factory) -> list[str]:
    """builtin:stdlib-code and -prose at byte level, from a few stdlib modules."""
    root = Path(sysconfig.get_paths()["stdlib"])
    mp = pytest.MonkeyPatch()
    mp.setattr("data_prep.sources.stdlib_files", lambda: [root / n for n in FEW_MODULES])
    out = tmp_path_factory.mktemp("data")
    try:
        for name in ("code", "prose"):
            assert prepare_main([f"builtin:stdlib-{name}", "--tokenizer", "bytes", "--out", str(out / name),
                                 "--val-count", "1", "--num-proc", "1", "--no-progress"]) == 0
    finally:
        mp.undo()
    return [str(out / "code"), str(out / "prose")]


def toy_args(tasks: list[str], out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "configs" / "study-cpu.toml"),
        "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=128", "--model.block_size=32",
        "--train.batch_size=4", "--train.warmup_steps=1", "--train.eval_interval=1", "--train.log_interval=4",
        "--train.ckpt_interval=4", "--data.val_windows=4",
        "--study.variants=mlp-gelu,mlp-relu2,kan,kan-frozenbase", "--study.seeds=1,2", "--study.lrs=1e-3,3e-3",
        "--study.sweep_steps=2", "--study.steps_a=4", "--study.steps_b=2", "--study.eval_every_b=1",
        f"--study.task_a={tasks[0]}", f"--study.task_b={tasks[1]}", f"--study.out={out}", *extra,
    ]


def test_study_runs_reports_and_resumes(byte_tasks, tmp_path, capsys):
    out = tmp_path / "study"
    assert study.main(toy_args(byte_tasks, out)) == 0
    printed = capsys.readouterr().out
    assert "[1/14] sweep mlp-gelu lr 0.001" in printed and "min left" in printed  # 6 sweep runs + 2 x 4 seeds
    results = json.loads((out / "results.json").read_text())
    variants = ("mlp-gelu", "mlp-relu2", "kan", "kan-frozenbase")
    assert {(r["variant"], r["seed"]) for r in results["runs"]} == {(v, s) for v in variants for s in (1, 2)}
    sweep = json.loads((out / "sweep.json").read_text())
    assert set(sweep["runs"]) == {"mlp-gelu", "mlp-relu2", "kan"}  # kan-frozenbase's phase A is kan's
    assert sweep["best_lr"]["kan-frozenbase"] == sweep["best_lr"]["kan"]
    for run in results["runs"]:  # seeds train at their variant's best lr
        assert run["probe"]["bits_per_nat"][0] > 0
        assert results["variants"][run["variant"]]["lr"] == sweep["best_lr"][run["variant"]]
    for seed in (1, 2):  # kan-frozenbase continues from kan's very phase A, which trained once
        kan, frozen = ({r["variant"]: r for r in results["runs"] if r["seed"] == seed}[v] for v in ("kan", "kan-frozenbase"))
        phase_a = Path(frozen["probe"]["phases"][0]["run_dir"])
        assert (Path(frozen["probe"]["phase_configs"][1]["train"]["init_from"]).parent.resolve()
                == Path(kan["probe"]["phases"][0]["run_dir"]).resolve())
        assert frozen["probe"]["loss_A_after_A"] == kan["probe"]["loss_A_after_A"]
        assert frozen["probe"]["loss_A_after_B"] != kan["probe"]["loss_A_after_B"]  # the phase Bs differ
        assert len(list((out / "runs" / "kan-frozenbase").glob(f"seed{seed}-*/phase0-*"))) == 1
        assert phase_a.name.startswith("phase0-")
    text = (out / "results.md").read_text()
    for needle in ("## Learning-rate sweep", "| mlp-relu2 |", "Q1 (quality", "Q2 (forgetting)", "## Ordering",
                   "| 50% |", "| 75% |", "| 100% |", "Unigram baseline", "bits/byte",
                   "## KAN locality", "| kan-frozenbase | kan | 2 |", "Q2 (forgetting), forgetting of A during phase B, "
                   "bits/byte: kan-frozenbase"):
        assert needle in text, needle
    assert [r["variant"] for r in results["locality"]] == ["kan-frozenbase"]
    assert all("kan-frozenbase" not in ranking for ranking in results["ordering"]["ranking"].values())  # kan's phase A
    first = results["runs"]
    assert study.main(toy_args(byte_tasks, out)) == 0  # everything finished: nothing trains again
    assert "stopped by max_steps" not in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["runs"] == first

    # another variant list (or any study.* key) is not another run: the finished runs are reused
    assert study.main(toy_args(byte_tasks, out, "--study.variants=mlp-gelu,kan")) == 0
    assert "stopped by max_steps" not in capsys.readouterr().out
    assert [r for r in json.loads((out / "results.json").read_text())["runs"]] == \
        [r for r in first if r["variant"] in ("mlp-gelu", "kan")]

    # a run folder made with other settings is a clear error, not a traceback, and is left as it was
    sweep_config = next((out / "sweep").glob("mlp-lr0.001-*")) / "config.json"
    saved = json.loads(sweep_config.read_text())
    saved["model"]["n_embd"] = 64
    sweep_config.write_text(json.dumps(saved))
    assert study.main(toy_args(byte_tasks, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("quadgpt study: error: The phase in") and "model.n_embd: 64 there, 128 now" in err
    assert json.loads(sweep_config.read_text()) == saved


def test_time_left_uses_each_variants_own_rate_and_skips_finished_runs():
    progress = study.Progress(n_runs=4)
    assert progress.minutes_left() is None
    for job, name in ((1, "mlp"), (2, "mlp"), (3, "kan"), (4, "kan")):
        progress.add((job,), name, 100.0)
    progress.drop((4,))  # finished in an earlier session
    progress.seconds, progress.work = {"mlp": 60.0, "kan": 180.0}, {"mlp": 100.0, "kan": 100.0}
    assert progress.minutes_left() == pytest.approx((60 + 60 + 180) / 60)  # jobs 1, 2 (mlp), 3 (kan)
    progress.add((5,), "quadratic", 100.0)  # not timed yet: the mean rate, 1.2 s per unit
    assert progress.minutes_left() == pytest.approx((60 + 60 + 180 + 120) / 60)


def test_a_phase_b_variant_needs_its_base_listed(byte_tasks, tmp_path, capsys):
    out = tmp_path / "study"
    assert study.main(toy_args(byte_tasks, out, "--study.variants=mlp-gelu,kan-frozenbase")) == 2
    assert "kan-frozenbase shares phase A with kan; list kan too" in capsys.readouterr().err
    assert not out.exists()


def test_runs_are_keyed_by_their_settings():
    from quadgpt.config import load_config

    config = load_config(REPO / "configs" / "study-cpu.toml")
    keys = {
        study.key_of({"run": study.run_payload(study.with_lr(config, lr)), "probe": steps})
        for lr in (1e-3, 2e-3) for steps in ([1, 2], [1, 3])
    }
    assert len(keys) == 4
    moved = study.run_payload(config) == study.run_payload(study.load_config(REPO / "configs" / "study-cpu.toml",
                                                                           ["train.out_dir=elsewhere"]))
    assert moved  # where a run is written does not change what it is


def test_unmatched_variants_are_refused_before_anything_is_written(byte_tasks, tmp_path, capsys):
    out = tmp_path / "study"
    args = toy_args(byte_tasks, out, "--study.variants=mlp-gelu,wide=model.ffn.kind=mlp;model.ffn.hidden=400")
    assert study.main(args) == 2
    assert "not parameter-matched within 2%" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (("--study.steps_a=8", "--train.eval_interval=3"), "does not evaluate phase A at steps 4 and 6 (50% and 75% "
                                                       "of study.steps_a = 8), where the report ranks the variants; "
                                                       "--train.eval_interval=2 does."),
    (("--study.steps_a=6",), "study.steps_a (6) must be a multiple of 4"),
])
def test_phase_a_without_evaluations_at_the_ranking_points_is_refused(byte_tasks, tmp_path, capsys, extra, message):
    """The report ranks the variants at 50/75/100% of phase A: a study that cannot evaluate there is
    refused before it starts, with a setting that works (it was ranked at the nearest evaluation)."""
    out = tmp_path / "study"
    assert study.main(toy_args(byte_tasks, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    study.check_order_points(8, 2)  # the interval it suggests passes (no exception)


def test_presets_are_matched_and_the_large_one_is_twice_the_size():
    from quadgpt.config import load_config

    sizes = {}
    for preset in ("study-cpu", "study-cpu-large", "study-gpu"):
        path = REPO / "configs" / f"{preset}.toml"
        variants = study.load_variants(str(path), [], load_config(path).study.variants + ",kan-nobase")
        table = study.size_table({n: v.config for n, v in variants.items()})
        assert study.check_matched(table, study.PARAM_TOLERANCE) == [], preset
        assert all(v.config.model.tokenizer == "bytes" and v.config.model.vocab_size == 320 for v in variants.values())
        sizes[preset] = table["mlp-gelu"]["non_embedding_params"]
    assert sizes["study-cpu-large"] >= 2 * sizes["study-cpu"]
