"""eval/: perplexity windows and sums, HF-export parity, the forgetting probe end to end on a
micro model, and the comparison report (files exist, parse, and a rerun reuses finished runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model_config

from eval import compare, forgetting, perplexity
from eval.cli import main as eval_main
from quadgpt.checkpoint import save_model_checkpoint
from quadgpt.config import Config, ConfigError, load_config
from quadgpt.model import GPT
from quadgpt.tokenizer import GPT2_VOCAB_SIZE, get_tokenizer

VOCAB = 64
REPO_ROOT = Path(__file__).resolve().parents[1]


def make_task(folder: Path, direction: int, seed: int) -> Path:
    """A prepared dataset whose next token is the previous one plus (direction *) 0, 1 or 2 mod
    VOCAB: task A (+) and task B (-) share tokens but contradict each other, so B makes A worse."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", 8_000), ("val", 1_000)):
        tokens = np.cumsum(direction * rng.integers(0, 3, size=n)) % VOCAB
        tokens.astype(np.uint16).tofile(folder / f"{split}_000000.bin")
        splits[split] = {"shards": [{"file": f"{split}_000000.bin", "tokens": n}], "tokens": n}
    meta = {"format": "quadgpt-tokens", "format_version": 1, "dtype": "uint16", "vocab_size": VOCAB, "splits": splits}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


MICRO = [
    "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=32", "--model.block_size=16",
    f"--model.vocab_size={VOCAB}", "--train.device=cpu", "--train.batch_size=4", "--train.lr=1e-2",
    "--train.warmup_steps=1", "--train.eval_interval=1", "--train.log_interval=1", "--data.val_windows=4",
]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("tasks")
    return [str(make_task(root / "A", 1, 0)), str(make_task(root / "B", -1, 1))]


# --------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------


def test_sliding_windows_score_every_target_once():
    tokens = torch.arange(10)
    x, y = perplexity.sliding_windows(tokens, block_size=4, stride=2)
    assert x.tolist() == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 0]]
    # first window scores all its targets; later ones only the new ones; -1 = not scored / padding
    assert y.tolist() == [[1, 2, 3, 4], [-1, -1, 5, 6], [-1, -1, 7, 8], [-1, -1, 9, -1]]
    scored = y[y >= 0].tolist()
    assert scored == list(range(1, 10))
    x, y = perplexity.sliding_windows(tokens, block_size=4, stride=4)
    assert sorted(y[y >= 0].tolist()) == list(range(1, 10))
    with pytest.raises(ValueError, match="stride"):
        perplexity.sliding_windows(tokens, block_size=4, stride=5)
    with pytest.raises(ValueError, match="2 tokens"):
        perplexity.sliding_windows(torch.arange(1), block_size=4, stride=4)


def test_uniform_model_scores_log_vocab_and_bits_per_byte_counts_text_bytes():
    enc = get_tokenizer("gpt2")
    ids = torch.tensor(enc.encode("héllo wörld, quadratic neurons 😀 " * 3))
    x, y = perplexity.sliding_windows(ids, block_size=8, stride=5)
    uniform = lambda idx: torch.zeros(*idx.shape, GPT2_VOCAB_SIZE)  # noqa: E731
    result = perplexity.evaluate_windows(uniform, x, y, batch_size=3)
    target_bytes = sum(len(enc.token_bytes(int(t))) for t in ids[1:])
    assert result.tokens == len(ids) - 1
    assert result.bytes == target_bytes
    assert result.loss == pytest.approx(math.log(GPT2_VOCAB_SIZE))
    assert result.perplexity == pytest.approx(GPT2_VOCAB_SIZE, rel=1e-4)
    expected_bpb = (len(ids) - 1) * math.log(GPT2_VOCAB_SIZE) / (math.log(2) * target_bytes)
    assert result.bits_per_byte == pytest.approx(expected_bpb)


def test_result_does_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = GPT(tiny_model_config("quadratic")).eval()
    x, y = perplexity.sliding_windows(torch.randint(0, VOCAB, (100,)), block_size=32, stride=20)
    one = perplexity.evaluate_windows(lambda idx: model(idx)[0], x, y, batch_size=1)
    many = perplexity.evaluate_windows(lambda idx: model(idx)[0], x, y, batch_size=5)
    assert one.loss == pytest.approx(many.loss, abs=1e-6)
    assert one.tokens == many.tokens == 99


def test_hf_export_perplexity_equals_checkpoint_perplexity(tmp_path, capsys):
    pytest.importorskip("transformers")
    from quadgpt.hf.export import export

    torch.manual_seed(0)
    model = GPT(tiny_model_config("kan", vocab_size=GPT2_VOCAB_SIZE, block_size=32))
    ckpt = save_model_checkpoint(tmp_path / "ckpt", model, Config(model=model.config))
    hf_folder = export(ckpt, tmp_path / "hf")
    text = tmp_path / "text.txt"
    text.write_text("def forward(self, x):\n    return self.proj(x) * self.gate(x)\n" * 3)
    numbers = {}
    for name, path in (("ckpt", ckpt), ("hf", hf_folder)):
        out = tmp_path / f"{name}.json"
        assert eval_main(["ppl", str(path), "--text", str(text), "--stride", "16", "--json", str(out)]) == 0
        numbers[name] = json.loads(out.read_text())
    assert numbers["ckpt"]["loaded_as"] == "checkpoint" and numbers["hf"]["loaded_as"] == "hf"
    assert numbers["hf"]["tokens"] == numbers["ckpt"]["tokens"] > 32  # longer than the context
    assert numbers["hf"]["loss"] == pytest.approx(numbers["ckpt"]["loss"], abs=1e-5)
    assert numbers["hf"]["bits_per_byte"] == pytest.approx(numbers["ckpt"]["bits_per_byte"], abs=1e-5)


def test_ppl_on_prepared_data_whole_split_and_fixed_windows(tasks, tmp_path, capsys):
    from quadgpt.data import validation_windows

    torch.manual_seed(0)
    model = GPT(tiny_model_config("swiglu", vocab_size=VOCAB, block_size=16))
    ckpt = save_model_checkpoint(tmp_path / "ckpt", model, Config(model=model.config))
    out = tmp_path / "ppl.json"
    assert eval_main(["ppl", str(ckpt), "--data", tasks[0], "--json", str(out)]) == 0
    assert json.loads(out.read_text())["tokens"] == 1_000 - 1  # the whole val split, each target once
    assert eval_main(["ppl", str(ckpt), "--data", tasks[0], "--windows", "6", "--json", str(out)]) == 0
    x, y = validation_windows(tasks[0], 16, 6)
    with torch.no_grad():
        _, trainer_style = model.eval()(x, y)  # what the trainer logs as val_loss on these windows
    assert json.loads(out.read_text())["loss"] == pytest.approx(float(trainer_style), abs=1e-5)


def test_ppl_cli_errors_name_the_input(tmp_path, capsys):
    assert eval_main(["ppl", str(tmp_path / "missing"), "--text", str(tmp_path / "t.txt")]) == 2
    assert "missing" in capsys.readouterr().err
    assert eval_main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Forgetting probe
# --------------------------------------------------------------------------------------


def test_two_step_probe_end_to_end_and_resumable(tasks, tmp_path):
    base = load_config(None, MICRO)
    settings = forgetting.ProbeSettings(tasks=tasks, steps=[2, 2], eval_every=1)
    result = forgetting.run_probe(base, settings, tmp_path / "probe", seed=3)
    m = result["matrix"]
    assert result["loss_A_after_A"] == m[0][0] and result["loss_A_after_B"] == m[1][0]
    assert result["forgetting"] == pytest.approx(m[1][0] - m[0][0])
    assert result["forgetting_ppl_ratio"] == pytest.approx(math.exp(m[1][0] - m[0][0]))
    assert result["plasticity"] == pytest.approx(m[0][1] - m[1][1])
    assert result["backward_transfer"] == pytest.approx(result["forgetting"])  # two tasks: the same number
    assert [c["step"] for c in result["curve_phase_b"]] == [0, 1, 2]
    # phase B starts from phase A's final weights: its step-0 loss on A is phase A's final loss
    assert result["curve_phase_b"][0]["loss_A"] == pytest.approx(m[0][0], abs=1e-6)
    assert result["max_forgetting"] == pytest.approx(max(c["loss_A"] for c in result["curve_phase_b"][1:]) - m[0][0])
    assert json.loads((tmp_path / "probe" / forgetting.PROBE_FILE).read_text())["forgetting"] == result["forgetting"]
    # finished phases are not retrained: same numbers, metrics files untouched
    metrics_file = next((tmp_path / "probe").glob("phase1-*/metrics.jsonl"))
    before = metrics_file.stat().st_mtime_ns
    again = forgetting.run_probe(base, settings, tmp_path / "probe", seed=3)
    assert again["matrix"] == m and metrics_file.stat().st_mtime_ns == before
    # starting from a checkpoint already trained on A skips phase 0 and measures the same A loss
    phase_a_last = next((tmp_path / "probe").glob("phase0-*")) / "last"
    settings = forgetting.ProbeSettings(tasks=tasks, steps=[1, 2], eval_every=1, init_from=str(phase_a_last))
    from_ckpt = forgetting.run_probe(base, settings, tmp_path / "from_ckpt", seed=3)
    assert from_ckpt["loss_A_after_A"] == pytest.approx(m[0][0], abs=1e-6)
    assert from_ckpt["loss_B_before_B"] == pytest.approx(m[0][1], abs=1e-6)
    assert not list((tmp_path / "from_ckpt").glob("phase0-*"))


def test_interrupted_phase_resumes_where_it_stopped(tasks, tmp_path, monkeypatch):
    import quadgpt.trainer

    real_train = quadgpt.trainer.train

    def killed_after_one_step(config):  # SIGTERM arrives during step 1: the step ends, is saved, the run stops
        trainer = quadgpt.trainer.Trainer(config)
        real_step = trainer.train_step

        def step_then_signal():
            trainer.stop_signal = "SIGTERM"
            return real_step()

        trainer.train_step = step_then_signal
        return trainer.run()

    base = load_config(None, MICRO)
    settings = forgetting.ProbeSettings(tasks=tasks, steps=[3, 2], eval_every=1)
    monkeypatch.setattr(quadgpt.trainer, "train", killed_after_one_step)
    with pytest.raises(forgetting.PhaseInterrupted, match="rerun the same command"):
        forgetting.run_probe(base, settings, tmp_path / "p", seed=0)
    monkeypatch.setattr(quadgpt.trainer, "train", real_train)
    result = forgetting.run_probe(base, settings, tmp_path / "p", seed=0)
    phase_a = next((tmp_path / "p").glob("phase0-*"))
    assert [r["step"] for r in forgetting.eval_records(phase_a)] == [0, 1, 2, 3]  # continued, not restarted
    assert [c["step"] for c in result["curve_phase_a"]] == [0, 1, 2, 3]


def test_three_tasks_give_a_task_matrix_and_bwt(tasks, tmp_path):
    base = load_config(None, MICRO)
    settings = forgetting.ProbeSettings(tasks=[tasks[0], tasks[1], tasks[0]], steps=[1, 1, 1], eval_every=1)
    result = forgetting.run_probe(base, settings, tmp_path / "probe3", seed=0)
    m = result["matrix"]
    assert all(m[i][j] is not None for i in range(3) for j in range(i + 1))
    assert m[0][2] is None  # never measured: no phase evaluates a task two steps ahead
    assert result["backward_transfer"] == pytest.approx(((m[2][0] - m[0][0]) + (m[2][1] - m[1][1])) / 2)
    assert len(result["forgetting_per_task"]) == 2


def test_forgetting_cli_aggregates_seeds_with_replay(tasks, tmp_path, capsys):
    argv = ["forgetting", "--tasks", ",".join(tasks), "--steps", "2,2", "--seeds", "1,2", "--replay", "0.5",
            "--out", str(tmp_path / "f"), "--config", str(REPO_ROOT / "configs" / "tiny.toml"), *MICRO]
    assert eval_main(argv) == 0
    report = json.loads((tmp_path / "f" / "forgetting.json").read_text())
    values = [run["forgetting"] for run in report["runs"]]
    assert report["aggregate"]["forgetting"] == pytest.approx([np.mean(values), np.std(values, ddof=1)])
    phase_b = json.loads(next((tmp_path / "f" / "seed1").glob("phase1-*/config.json")).read_text())
    assert phase_b["data"]["replay_dataset"] == tasks[0] and phase_b["data"]["replay_fraction"] == 0.5
    assert "forgetting" in capsys.readouterr().out


def test_probe_settings_are_checked():
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        forgetting.ProbeSettings(tasks=["a"], steps=[1])
    with pytest.raises(ConfigError, match="one positive step budget"):
        forgetting.ProbeSettings(tasks=["a", "b"], steps=[1])
    with pytest.raises(ConfigError, match="KAN"):
        settings = forgetting.ProbeSettings(tasks=["a", "b"], steps=[1, 1], freeze_base=True)
        forgetting.phase_config(load_config(None, MICRO), settings, 1, Path("runs/x"), 0)


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------


def test_variants_parse_and_mismatch_is_reported():
    variants = compare.parse_variants("mlp-gelu,quadratic,k8=model.ffn.kind=kan;model.ffn.grid_size=8")
    assert variants["mlp-gelu"] == ["model.ffn.kind=mlp", "model.ffn.activation=gelu"]
    assert variants["quadratic"] == ["model.ffn.kind=quadratic"]
    assert variants["k8"] == ["model.ffn.kind=kan", "model.ffn.grid_size=8"]
    with pytest.raises(ConfigError, match="Unknown variant 'mpl'"):
        compare.parse_variants("mpl")
    with pytest.raises(ConfigError, match="twice"):
        compare.parse_variants("kan,kan")
    sizes = {"a": {"non_embedding_params": 1000}, "b": {"non_embedding_params": 1010}, "c": {"non_embedding_params": 1100}}
    assert compare.check_matched(sizes) == ["c has 1.100x the non-embedding parameters of a"]


def test_default_variants_are_matched_at_the_tiny_config():
    variants = compare.parse_variants(compare.DEFAULT_VARIANTS)
    configs = compare.variant_configs(compare.DEFAULT_CONFIG, compare.DEFAULT_OVERRIDES, variants)
    assert compare.check_matched(compare.size_table(configs)) == []


def test_compare_writes_a_report_that_parses_and_resumes(tasks, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["--variants", "mlp-gelu,quadratic", "--seeds", "1,2", "--task-a", tasks[0], "--task-b", tasks[1],
            "--steps-a", "2", "--steps-b", "2", "--eval-every-b", "1", "--out", str(out), *MICRO]
    assert compare.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert {(r["variant"], r["seed"]) for r in results["runs"]} == {(v, s) for v in ("mlp-gelu", "quadratic") for s in (1, 2)}
    for run in results["runs"]:  # the perplexity pass scores the same windows the trainer evaluated
        assert run["perplexity"]["loss"] == pytest.approx(run["probe"]["loss_A_after_A"], abs=1e-5)
    table = (out / "results.md").read_text()
    assert "| mlp-gelu |" in table and "| quadratic |" in table and "± " in table and "resolved" in table
    import matplotlib.image

    for png in ("val_loss_vs_tokens.png", "val_loss_vs_time.png", "forgetting_phase_b.png"):
        assert matplotlib.image.imread(out / png).ndim == 3
    first = results["runs"]
    capsys.readouterr()
    assert compare.main(argv) == 0  # everything finished: nothing is trained again
    assert "stopped by max_steps" not in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["runs"] == first


def test_report_summarises_seeds_on_hand_made_results():
    from eval.report import (
        differences_table, markdown_table, ordering, ordering_text, paired_differences, summarize, verdicts,
    )

    def run(variant: str, seed: int, loss: float, forgot: float, curve=(3.0, 2.0, 1.5)) -> dict:
        points = [{"tokens": 100 * i, "elapsed": float(i), "step": i, "loss": v} for i, v in enumerate(curve)]
        return {"variant": variant, "seed": seed, "tokens_per_s": 100.0 * seed,
                "perplexity": {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": loss / math.log(2)},
                "probe": {"forgetting": forgot, "forgetting_ppl_ratio": math.exp(forgot), "max_forgetting": forgot + 0.1,
                          "plasticity": 0.5, "bits_per_nat": [1 / math.log(2), 0.5], "curve_phase_a": points}}

    results = {"variants": {"kan": {"hidden": 56, "non_embedding_params": 782_592, "flops_per_token": 44e6},
                            "mlp-gelu": {"hidden": 512, "non_embedding_params": 793_344, "flops_per_token": 44e6}},
               "runs": [run("kan", 1, 3.0, 0.2), run("kan", 2, 3.2, 0.4)]}
    (row,) = summarize(results)  # a variant without runs gets no row
    t1 = 12.706  # t_{0.975} at 1 degree of freedom: two seeds give wide intervals
    assert row["seeds"] == [1, 2]
    assert (row["val_loss"].mean, row["val_loss"].half) == pytest.approx((3.1, t1 * 0.1))
    assert row["forgetting_bpb"].mean == pytest.approx(0.3 / math.log(2))
    assert row["plasticity_bpb"].mean == pytest.approx(0.25)
    table = markdown_table([row]).splitlines()
    assert table[2].startswith(f"| kan | 56 | 782,592 | 1.000 | 44.00 | 150 | 2 | {3.1 / math.log(2):.4f} ± ")
    assert "±" not in markdown_table(summarize(results | {"runs": results["runs"][:1]}))  # 1 seed: no spread

    # paired by seed against mlp-gelu: kan is mlp-gelu - 0.1 nats on seed 1 and - 0.3 on seed 2
    mlp_runs = [run("mlp-gelu", 1, 3.1, 0.2, (3.0, 2.5, 1.0)), run("mlp-gelu", 2, 3.5, 0.4, (3.0, 2.5, 1.0))]
    both = results | {"runs": results["runs"] + mlp_runs}
    (diff,) = paired_differences(both)
    assert diff["variant"] == "kan" and diff["reference"] == "mlp-gelu" and diff["seeds"] == [1, 2]
    assert diff["bits_per_byte"].mean == pytest.approx(-0.2 / math.log(2))
    assert diff["forgetting_bpb"].mean == pytest.approx(0.0)
    assert "| kan | mlp-gelu | 2 | -0.2885 | [" in differences_table([diff])
    sentences = verdicts([diff])
    assert len(sentences) == 2 and all("not resolved" in s for s in sentences)  # t at 1 df: the CIs include 0
    order = ordering(both)  # kan is behind at half the tokens, ahead at the end
    assert order["ranking"]["50%"] == ["kan", "mlp-gelu"] and order["ranking"]["100%"] == ["mlp-gelu", "kan"]
    assert not order["stable"]
    # evaluations at 0, 50 and 100% of the tokens: 75% is ranked at the nearest one, and says so
    assert order["evaluated_at"] == {"50%": [0.5], "75%": [0.5], "100%": [1.0]}
    text = ordering_text(order)
    assert "| 75% (no evaluation there; nearest: 50%) |" in text and "| 50% | kan < mlp-gelu |" in text


def test_run_folders_differ_by_phase_b_mitigation():
    """A finished run is reused only by a comparison with the same phase-B settings."""
    plain = forgetting.ProbeSettings(tasks=["a", "b"], steps=[2, 2])
    frozen = forgetting.ProbeSettings(tasks=["a", "b"], steps=[2, 2], freeze_base=True)
    replay = forgetting.ProbeSettings(tasks=["a", "b"], steps=[2, 2], replay_fraction=0.25)
    labels = {compare.run_label("kan", s) for s in (plain, frozen, replay)}
    assert labels == {"kan", "kan-frozenbase", "kan-replay0.25"}


def test_outputs_never_land_on_the_inputs(tasks, tmp_path, capsys):
    """Issue 12, fault 1: forgetting's and compare's --out (and compare's --runs), and ppl's --json,
    must not be, hold or lie inside a task, checkpoint or text they read; refused before any work."""
    task_a = Path(tasks[0])
    before = sorted(p.name for p in task_a.iterdir())
    for out in (task_a, task_a.parent, task_a / "probe"):
        argv = ["forgetting", "--tasks", ",".join(tasks), "--steps", "1,1", "--seeds", "1", "--out", str(out),
                "--config", str(REPO_ROOT / "configs" / "tiny.toml"), *MICRO]
        assert eval_main(argv) == 2 and "the input" in capsys.readouterr().err
        base = ["--variants", "mlp-gelu", "--seeds", "1", "--task-a", tasks[0], "--task-b", tasks[1],
                "--steps-a", "1", "--steps-b", "1", *MICRO]
        assert compare.main([*base, "--out", str(out)]) == 2 and "the input" in capsys.readouterr().err
        assert compare.main([*base, "--out", str(tmp_path / "c"), "--runs", str(out)]) == 2
        assert "--runs" in capsys.readouterr().err
    assert sorted(p.name for p in task_a.iterdir()) == before and not (tmp_path / "c").exists()
    text = tmp_path / "t.txt"
    text.write_text("some text to score")
    assert eval_main(["ppl", str(tmp_path / "no-model"), "--text", str(text), "--json", str(text)]) == 2
    assert "is the input" in capsys.readouterr().err and text.read_text() == "some text to score"
