"""Catastrophic-forgetting probe: train on task A, then on task B, and watch A's loss.

A probe is a sequence of ordinary training runs ("phases"), one per task (a prepared dataset),
each in its own folder under the probe's folder. Phase 0 trains task 0 from scratch (or is
skipped by starting from a checkpoint already trained on it); phase i > 0 starts from phase
i-1's final weights with a fresh optimizer (``train.init_from``) and trains task i while
evaluating every earlier task on its fixed validation windows (``data.extra_val``).

From those evaluations come, on losses (see ``quadgpt.metrics`` for signs): the task matrix
``R[i][j]`` = loss on task j after phase i, forgetting of A, its peak during B, plasticity, and
for three or more tasks GEM's backward transfer. ``R[i][i+1]`` (the next task before it is
trained) is phase i+1's evaluation at its step 0, so no phase evaluates tasks it will not need.

Mitigations, applied to phases 1.. : ``replay`` mixes a fraction of the previous task's training
data into every batch; ``freeze_base`` keeps a KAN's SiLU base branch fixed, leaving only the
local spline coefficients to change (the setting of the KAN paper's locality argument). A KAN
without a base branch at all is an architecture choice: ``--model.ffn.base=none``.

Resumable: a finished phase leaves ``summary.json`` and is not rerun; an interrupted one resumes
from its newest checkpoint (``train.resume=auto``). Either only when the phase's folder was made
with the settings asked for now (``quadgpt.run_settings``); otherwise the probe refuses, naming
the settings that differ, before it trains anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from quadgpt import metrics
from quadgpt.atomic import write_json_atomic
from quadgpt.checkpoint import CheckpointError
from quadgpt.config import Config, ConfigError, load_config, split_config_args
from quadgpt.safety import check_output_path
from quadgpt.data import DataError
from quadgpt.run_settings import REUSE_MAY_CHANGE, check_same_settings

# Budget of the CPU default (``quadgpt compare``: 4 kinds x 3 seeds on configs/tiny.toml), sized for
# the hard limit of 60 minutes on a 2-core CPU even when the machine is shared. Measured (see
# docs/results/README.md): one seed of the 4 kinds, 160 + 60 steps of 8 x 128 tokens with 32
# validation windows of 128 tokens per set, took 390 s with two threads on a quiet machine
# (~20 min for 3 seeds) and ~18-24 min per seed single-threaded beside other jobs (59.5 min in
# all). The 50k-entry LM head dominates the tiny model's cost, so all kinds run at similar speed.
# Batches of 8 give twice the optimizer steps of the preset's 16 for the same tokens.
DEFAULT_CONFIG = "configs/tiny.toml"
DEFAULT_OVERRIDES = [
    "train.batch_size=8",
    "train.warmup_steps=20",
    "train.eval_interval=25",
    "train.log_interval=25",
    "train.ckpt_interval=50",
    "train.keep_last=1",
    "data.val_windows=32",
]
DEFAULT_STEPS_A = 160
DEFAULT_STEPS_B = 60
DEFAULT_EVAL_EVERY_B = 10
DEFAULT_TASKS = "builtin:stdlib-code,builtin:stdlib-prose"
VAL_FRACTION = 0.05  # of documents held out when a corpus is prepared here (the stdlib prose has few)

SUMMARY_FILE = "summary.json"
PROBE_FILE = "probe.json"


class PhaseInterrupted(RuntimeError):
    """A phase stopped before its step budget (a signal, a time limit); rerunning resumes it."""


@dataclasses.dataclass
class ProbeSettings:
    """What a probe does beyond the model/train config it is given."""

    tasks: list[str]  # prepared dataset folders, in training order
    steps: list[int]  # optimizer steps of each phase (phase 0's is ignored with init_from)
    eval_every: int = 10  # evaluation interval of phases 1.. (phase 0 uses train.eval_interval)
    init_from: str = ""  # a checkpoint already trained on task 0: phase 0 is not run
    replay_fraction: float = 0.0  # > 0: replay the previous task in phases 1..
    freeze_base: bool = False  # KAN: freeze the SiLU base branch in phases 1..

    def __post_init__(self) -> None:
        if len(self.tasks) < 2:
            raise ConfigError(f"A forgetting probe needs at least 2 tasks (A then B); got {self.tasks}.")
        if len(self.steps) != len(self.tasks) or any(s < 1 for s in self.steps):
            raise ConfigError(f"Give one positive step budget per task: {len(self.tasks)} tasks, steps {self.steps}.")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1; got {self.eval_every}.")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ConfigError(f"replay_fraction must be in [0, 1); got {self.replay_fraction}.")


def base_config(config_path: str | None, overrides: list[str]) -> Config:
    """The probe's model/train config: defaults < ``--config`` file < command-line overrides.
    Without a file, the tiny model and the CPU budget above (``DEFAULT_OVERRIDES``) stand in for it."""
    if config_path is None:
        return load_config(DEFAULT_CONFIG, DEFAULT_OVERRIDES + overrides)
    return load_config(config_path, overrides)


def task_names(tasks: list[str]) -> list[str]:
    """Short, unique names of the task folders (their base names, numbered if they collide)."""
    names = [Path(t).name or f"task{i}" for i, t in enumerate(tasks)]
    if len(set(names)) < len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]
    return [n.replace(",", "_").replace("=", "_") for n in names]


def phase_config(base: Config, settings: ProbeSettings, index: int, run_dir: Path, seed: int) -> Config:
    """The training config of phase ``index``: base model/schedule, this task's data, earlier
    tasks as extra validation sets, the previous phase's weights, and the mitigations."""
    names = task_names(settings.tasks)
    extra_val = ",".join(f"{names[j]}={settings.tasks[j]}" for j in range(index))
    data = dataclasses.replace(base.data, dataset=settings.tasks[index], extra_val=extra_val)
    train = dataclasses.replace(
        base.train,
        out_dir=str(run_dir / f"phase{index}-{names[index]}"),
        max_steps=settings.steps[index],
        max_tokens=0,
        max_time=0.0,
        seed=seed,
        resume="auto",
        init_from="",
    )
    model = base.model
    if index > 0:
        train.init_from = str(_phase_checkpoint(settings, index - 1, run_dir))
        train.eval_interval = settings.eval_every
        if settings.replay_fraction > 0:
            data.replay_dataset = settings.tasks[index - 1]
            data.replay_fraction = settings.replay_fraction
        if settings.freeze_base:
            if model.ffn.kind != "kan":
                raise ConfigError(f"freeze_base applies to the KAN FFN only; this model's ffn is '{model.ffn.kind}'.")
            model = dataclasses.replace(model, ffn=dataclasses.replace(model.ffn, freeze_base=True))
    return dataclasses.replace(base, model=model, data=data, train=train)


def _phase_checkpoint(settings: ProbeSettings, index: int, run_dir: Path) -> Path:
    """The final weights of phase ``index`` (its newest step checkpoint, not its best)."""
    if index == 0 and settings.init_from:
        from quadgpt.checkpoint import resolve_checkpoint

        return resolve_checkpoint(settings.init_from)
    names = task_names(settings.tasks)
    return run_dir / f"phase{index}-{names[index]}" / "last"


def task_folder(source: str, data_root: Path, tokenizer: str = "gpt2") -> Path:
    """Where task ``source``'s prepared data is: the folder itself if it is prepared, otherwise
    ``data_root/<name>`` (``<name>-bytes`` etc. for a tokenizer other than GPT-2's; see
    ``prepared_task``)."""
    if (Path(source) / "meta.json").is_file():
        return Path(source)
    out = data_root / source.removeprefix("builtin:").replace("/", "_").replace(":", "_")
    return out if tokenizer == "gpt2" else out.with_name(f"{out.name}-{tokenizer}")


def task_inputs(sources: list[str], data_root: Path, tokenizer: str = "gpt2") -> list[Path]:
    """Every path the tasks read (local sources and their prepared folders): what a probe's or a
    comparison's output folders must keep clear of (``quadgpt.safety.check_output_path``)."""
    local = [Path(s) for s in sources if not s.startswith(("builtin:", "hf:"))]
    return local + [task_folder(s, data_root, tokenizer) for s in sources]


def prepared_task(source: str, data_root: Path, tokenizer: str = "gpt2") -> str:
    """A prepared dataset folder for ``source``: the folder itself if it is one, otherwise the
    corpus prepared (once) with ``tokenizer`` into ``data_root/<name>`` (``<name>-bytes`` etc. for
    a tokenizer other than GPT-2's)."""
    from data_prep.prepare import prepare

    out = task_folder(source, data_root, tokenizer)
    if out == Path(source):
        return source
    prepare(source, out, val_fraction=VAL_FRACTION, progress=False, tokenizer=tokenizer)
    return str(out)


def check_phase_folder(config: Config) -> None:
    """Refuse (SettingsMismatch, naming the keys) a phase folder made with other settings than
    ``config``: its finished result or its checkpoints would stand in for a different phase."""
    out = Path(config.train.out_dir)
    check_same_settings(out / "config.json", config, REUSE_MAY_CHANGE, f"The phase in '{out}'",
                        "rerun with those settings, or write this probe to another --out.")


def plan_probe(base: Config, settings: ProbeSettings, run_dir: Path, seed: int, *, with_files: bool = True
               ) -> list[Config | None]:
    """Every phase's config (None for a phase 0 replaced by ``init_from``), checked before any is run.

    Always checks each config alone (``quadgpt.validate.check_config``); with ``with_files``, also
    its data, the free disk space, and that an existing phase folder was made with these settings.
    Raises ConfigError, DataError or CheckpointError.
    """
    from quadgpt.validate import check_config, check_data, check_disk

    world = int(os.environ.get("WORLD_SIZE", "1"))
    configs: list[Config | None] = []
    for index in range(len(settings.tasks)):
        config = phase_config(base, settings, index, run_dir, seed)
        if index == 0 and settings.init_from:
            configs.append(None)
            continue
        check_config(config, world)
        if with_files:
            check_data(config, world)
            check_disk(config)
            check_phase_folder(config)
        configs.append(config)
    return configs


def run_phase(config: Config) -> dict[str, Any]:
    """Train one phase unless its summary says it finished (with these settings); return the summary."""
    from quadgpt.trainer import train

    out = Path(config.train.out_dir)
    done = out / SUMMARY_FILE
    check_phase_folder(config)
    if done.is_file():
        return json.loads(done.read_text())
    summary = train(config)
    if summary.get("stopped_by") != "max_steps":
        raise PhaseInterrupted(f"Phase in '{out}' stopped by {summary.get('stopped_by')}; rerun the same command to resume it.")
    write_json_atomic(done, summary)
    return summary


def eval_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation records of one phase's ``metrics.jsonl``, in step order."""
    from quadgpt.logging_utils import read_metrics

    return sorted((r for r in read_metrics(run_dir) if r.get("kind") == "eval"), key=lambda r: r["step"])


def _loss(record: dict[str, Any], own: str, name: str) -> float:
    return record["val_loss"] if name == own else record[f"val_loss/{name}"]


def _point(record: dict[str, Any]) -> dict[str, Any]:
    """Where on the run an evaluation record was taken."""
    return {"step": record["step"], "tokens": record["tokens"], "elapsed": record["elapsed"]}


def analyse(settings: ProbeSettings, phase_dirs: list[Path]) -> dict[str, Any]:
    """Task matrix, forgetting, peak forgetting, plasticity, BWT and curves from the phases' logs."""
    names = task_names(settings.tasks)
    n = len(names)
    first = 1 if settings.init_from else 0
    records = {i: eval_records(phase_dirs[i]) for i in range(first, n)}
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]  # upper triangle: unmeasured
    for i in range(n):
        if i in records:  # after phase i: its final evaluation of task i and every earlier task
            final = records[i][-1]
            for j in range(i + 1):
                matrix[i][j] = _loss(final, names[i], names[j])
        else:  # phase 0 replaced by init_from: phase 1 evaluated those weights at its step 0
            matrix[0][0] = records[1][0][f"val_loss/{names[0]}"]
        if i + 1 < n:  # the next task before training on it
            matrix[i][i + 1] = records[i + 1][0]["val_loss"]
    a = names[0]
    loss_a_after_a, loss_a_after_b = matrix[0][0], matrix[1][0]
    curve_b = [
        _point(r) | {"loss_A": r[f"val_loss/{a}"], "loss_B": r["val_loss"]} for r in records[1]
    ]
    result: dict[str, Any] = {
        "tasks": dict(zip(names, settings.tasks)),
        "matrix": matrix,
        "loss_A_after_A": loss_a_after_a,
        "loss_A_after_B": loss_a_after_b,
        "loss_B_before_B": matrix[0][1],
        "loss_B_after_B": matrix[1][1],
        "forgetting": metrics.forgetting(loss_a_after_a, loss_a_after_b),
        "forgetting_ppl_ratio": metrics.perplexity_ratio(loss_a_after_a, loss_a_after_b),
        "max_forgetting": metrics.max_forgetting(loss_a_after_a, [c["loss_A"] for c in curve_b[1:]]),
        "plasticity": metrics.plasticity(matrix[0][1], matrix[1][1]),
        "curve_phase_b": curve_b,
        "curve_phase_a": [
            _point(r) | {"loss": r["val_loss"]} for r in records.get(0, [])
        ],
    }
    result["backward_transfer"] = metrics.backward_transfer(matrix)  # reads the lower triangle only
    if n >= 3:
        result["forgetting_per_task"] = metrics.forgetting_per_task(matrix)
    return result


def run_probe(base: Config, settings: ProbeSettings, run_dir: str | Path, seed: int) -> dict[str, Any]:
    """Run (or resume) every phase of the probe in ``run_dir`` and return its analysis, which is
    also written to ``run_dir/probe.json``."""
    run_dir = Path(run_dir)
    configs = plan_probe(base, settings, run_dir, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    phase_dirs, summaries = [], []
    for index, config in enumerate(configs):
        phase_dirs.append(Path(phase_config(base, settings, index, run_dir, seed).train.out_dir))
        summaries.append({} if config is None else run_phase(config))
    result = analyse(settings, phase_dirs) | {
        "seed": seed, "phases": summaries, "settings": dataclasses.asdict(settings),
        "phase_configs": [None if c is None else c.to_dict() for c in configs],  # what each phase really ran
    }
    result |= in_bits_per_byte(result, base, settings)
    write_json_atomic(run_dir / PROBE_FILE, result)
    return result


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; ConfigError when no seed is given."""
    seeds = [int(s) for s in text.split(",") if s.strip()]
    if not seeds:
        raise ConfigError(f"--seeds {text!r} names no seed: give at least one, e.g. --seeds 1,2,3.")
    return seeds


def in_bits_per_byte(result: dict[str, Any], base: Config, settings: ProbeSettings) -> dict[str, Any]:
    """The probe's headline numbers in bits per byte (comparable across tokenizers): each task's
    factor from nats/token on its fixed validation windows, and the A and B metrics scaled by it."""
    from eval.perplexity import validation_bits_per_nat

    factors = [
        validation_bits_per_nat(task, base.model.block_size, base.data.val_windows, base.model.tokenizer)
        for task in settings.tasks[:2]
    ]
    a, b = factors
    out = {"bits_per_nat": factors}
    for key, factor in (("loss_A_after_A", a), ("loss_A_after_B", a), ("loss_B_before_B", b), ("loss_B_after_B", b),
                        ("forgetting", a), ("max_forgetting", a), ("plasticity", b)):
        out[f"{key}_bpb"] = result[key] * factor
    return out


def aggregate(results: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Mean and std over seeds of each scalar metric of several probes."""
    keys = ["loss_A_after_A_bpb", "loss_A_after_B_bpb", "forgetting_bpb", "max_forgetting_bpb", "plasticity_bpb",
            "loss_A_after_A", "loss_A_after_B", "loss_B_before_B", "loss_B_after_B", "forgetting",
            "forgetting_ppl_ratio", "max_forgetting", "plasticity", "backward_transfer"]
    return {k: metrics.mean_std([r[k] for r in results]) for k in keys if all(k in r for r in results)}


def format_probe(results: list[dict[str, Any]]) -> str:
    """Human summary of one or several seeds of a probe."""
    agg = aggregate(results)
    names = list(results[0]["tasks"])
    lines = [f"forgetting probe: {' -> '.join(names)}, {len(results)} seed(s)"]
    for key, (mean, std) in agg.items():
        lines.append(f"  {key:<22} {mean:9.4f} ± {std:.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Forgetting probe: ``quadgpt eval forgetting [--tasks A,B[,...]] [--steps 160,60]
    [--seeds 1,2,3] [--out FOLDER] [--replay 0.1] [--freeze-base] [--init-from CKPT] [--config F]
    [--section.key=value ...]``. Phase i trains on task i (a prepared folder or a corpus source,
    prepared under --data-root) for its step budget, evaluating every earlier task every
    ``--eval-every`` steps; prints forgetting, plasticity and BWT (mean ± std over seeds) and
    writes probe.json per seed and forgetting.json with all of them. Without --config: the tiny
    model and budget of the CPU comparison, on the stdlib code -> prose pair."""
    parser = argparse.ArgumentParser(prog="quadgpt eval forgetting", description=main.__doc__)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma-separated, in order (default {DEFAULT_TASKS})")
    parser.add_argument("--steps", default=f"{DEFAULT_STEPS_A},{DEFAULT_STEPS_B}",
                        help="steps per phase: one for all, or one per task")
    parser.add_argument("--out", default="runs/forgetting", help="folder for the phases' runs and the results")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (default 1,2,3)")
    parser.add_argument("--eval-every", type=int, default=DEFAULT_EVAL_EVERY_B, help="evaluation interval after phase 0")
    parser.add_argument("--init-from", default="", help="checkpoint already trained on the first task (skips phase 0)")
    parser.add_argument("--replay", type=float, default=0.0,
                        help="fraction of each later batch replayed from the previous task")
    parser.add_argument("--freeze-base", action="store_true", help="KAN: freeze the SiLU base branch after phase 0")
    parser.add_argument("--data-root", default="data", help="where tasks given as corpus sources are prepared")
    try:
        config_path, overrides, rest = split_config_args(argv)
        args = parser.parse_args(rest)
        out = Path(args.out)
        base = base_config(config_path, overrides)
        sources = [t for t in args.tasks.split(",") if t]
        steps = [int(s) for s in args.steps.split(",")]
        settings = ProbeSettings(
            tasks=sources,
            steps=steps * len(sources) if len(steps) == 1 else steps,
            eval_every=args.eval_every,
            init_from=args.init_from,
            replay_fraction=args.replay,
            freeze_base=args.freeze_base,
        )
        check_output_path(args.out, [*task_inputs(sources, Path(args.data_root), base.model.tokenizer), args.init_from], suffix="forgetting")
        seeds = parse_seeds(args.seeds)
        for seed in seeds:  # the configs alone, before any corpus is prepared
            plan_probe(base, settings, out / f"seed{seed}", seed, with_files=False)
        settings.tasks = [prepared_task(t, Path(args.data_root), base.model.tokenizer) for t in sources]
        for seed in seeds:  # their data, disk space and any earlier phase folders, before phase A of seed 1
            plan_probe(base, settings, out / f"seed{seed}", seed)
    except (ConfigError, DataError, CheckpointError, ValueError) as err:
        print(f"quadgpt eval forgetting: error: {err}", file=sys.stderr)
        return 2
    from quadgpt.trainer import ResultLost, TrainingDiverged

    try:
        results = [run_probe(base, settings, out / f"seed{seed}", seed) for seed in seeds]
    except (PhaseInterrupted, TrainingDiverged, ResultLost) as err:
        print(f"quadgpt eval forgetting: {err}", file=sys.stderr)
        return 1
    write_json_atomic(out / "forgetting.json", {"seeds": seeds, "aggregate": aggregate(results), "runs": results})
    print(format_probe(results))
    return 0
