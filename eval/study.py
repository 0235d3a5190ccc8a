"""``quadgpt study --config configs/study-cpu.toml``: the FFN comparison that can answer the question.

1. **Sweep.** Each variant trains phase A (task A only, ``study.sweep_steps``, seed
   ``study.sweep_seed``) at every learning rate of ``study.lrs``; its best (lowest final bits/byte
   on A) is the lr its seeds use. ``study.lr_from`` takes the best lrs of another study instead
   (the larger size reuses the small size's sweep).
2. **Seeds.** Each variant x seed runs the forgetting probe (phase A on task A, phase B on task
   B, ``eval.forgetting``) at its best lr, then the perplexity pass (``eval.compare.run_one``).
3. **Report** (``eval.report``): means with 95% CIs, paired differences against mlp-gelu, a
   sentence per question, the ordering at 50/75/100% of phase A, band plots, plus the sweep table,
   the unigram baseline and the wall time.

Same seed = same data order and initial-weight seed for every variant (``train.seed``). Every run
lives in a folder named by a hash of everything that decides its result, so a finished run is
reused only by a study with the same settings, and a killed study continues where it stopped
(an interrupted run resumes from its newest checkpoint). The only things written outside ``--out``
are the prepared corpora under ``study.data_root``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import shlex
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from eval.compare import BUILTIN_VARIANTS, check_matched, parse_variants, run_one, size_table
from eval.forgetting import SUMMARY_FILE, PhaseInterrupted, ProbeSettings, prepared_task, run_phase, task_names
from eval.perplexity import unigram_bits_per_byte, validation_bits_per_nat
from eval.report import ORDER_FRACTIONS, markdown_table, summarize, write_report
from quadgpt.atomic import write_json_atomic
from quadgpt.checkpoint import CheckpointError
from quadgpt.config import Config, ConfigError, load_config, split_config_args
from quadgpt.data import DataError
from quadgpt.trainer import ResultLost, TrainingDiverged

PARAM_TOLERANCE = 0.02  # the study's stricter match of non-embedding parameters
# variants that differ from a built-in one only in phase B: name -> (its phase-A variant, freeze_base)
PHASE_B_VARIANTS = {"kan-frozenbase": ("kan", True)}
SWEEP_FILE = "sweep.json"


@dataclasses.dataclass
class Variant:
    name: str
    config: Config  # phase A's config at the study's defaults (lr set per run)
    freeze_base: bool = False


def parse_study_variants(spec: str) -> dict[str, tuple[list[str], bool]]:
    """``study.variants`` -> {name: (config overrides, freeze the KAN base in phase B)}."""
    phase_b = {n: v for n, v in PHASE_B_VARIANTS.items() if n in spec.split(",")}
    rest = ",".join(s for s in spec.split(",") if s.strip() and s.strip() not in phase_b)
    out = {name: (overrides, False) for name, overrides in parse_variants(rest).items()} if rest else {}
    for name, (base, freeze) in phase_b.items():
        out[name] = (BUILTIN_VARIANTS[base], freeze)
    return out


def share_phase_a(base_run: Path, run_dir: Path, tasks: list[str]) -> None:
    """Make ``run_dir``'s phase A its base variant's (same seed): a relative link to
    ``base_run``'s phase-0 folder, which must hold a finished phase.

    A phase-B variant (kan-frozenbase) trains phase A exactly as its base (kan) does, bit for bit:
    the same config, lr and seed; only phase B differs. Sharing the folder saves that run and
    makes the paired comparison of the two phase Bs start from the very same weights.
    """
    name = f"phase0-{task_names(tasks)[0]}"  # as eval.forgetting names it
    target = base_run / name
    if not (target / SUMMARY_FILE).is_file():
        raise ConfigError(f"'{target}' holds no finished phase A to share.")
    link = run_dir / name
    if link.is_symlink() or link.exists():
        if link.resolve() != target.resolve():
            raise ConfigError(f"'{link}' exists and is not a link to '{target}'; move it away, then rerun.")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path("..") / ".." / base_run.parent.name / base_run.name / name, target_is_directory=True)


def key_of(payload: Any) -> str:
    """A short hash of everything that decides a run's result."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def with_lr(config: Config, lr: float) -> Config:
    """``config`` at peak lr ``lr`` (the floor of the schedule scales with it: lr / 10)."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, lr=lr, min_lr=lr / 10))


def run_payload(config: Config) -> dict[str, Any]:
    """What decides a training run: the model, data and train sections, minus where it is written."""
    tree = config.to_dict()
    tree["train"] = {k: v for k, v in tree["train"].items() if k not in ("out_dir", "resume", "tensorboard", "wandb")}
    return {k: tree[k] for k in ("model", "data", "train")}


class Progress:
    """Which run is going and the time left, from the runs this session has trained.

    Each job (a sweep run or a seed run) is counted in FLOPs (tokens x training FLOPs/token of its
    variant) and costs its variant's measured seconds per FLOP (the mean of the timed variants
    until it has its own: KAN costs ~3x an MLP per FLOP on a CPU). Jobs finished in an earlier
    session are dropped from the estimate, as soon as they are known."""

    def __init__(self, n_runs: int) -> None:
        self.start = time.time()
        self.n_runs, self.index = n_runs, 0
        self.pending: dict[tuple, tuple[str, float]] = {}  # job -> (variant, FLOPs)
        self.seconds: dict[str, float] = {}
        self.work: dict[str, float] = {}

    def add(self, job: tuple, name: str, work: float) -> None:
        self.pending[job] = (name, work)

    def drop(self, job: tuple) -> None:
        """``job`` was finished before this session: nothing to wait for."""
        self.pending.pop(job, None)

    def minutes_left(self) -> float | None:
        """Minutes of the pending jobs at the measured rates; None before any job was timed."""
        if not self.work:
            return None
        mean_rate = sum(self.seconds.values()) / sum(self.work.values())
        rate = {name: self.seconds[name] / self.work[name] for name in self.work}
        return sum(work * rate.get(name, mean_rate) for name, work in self.pending.values()) / 60

    def begin(self, job: tuple, label: str) -> float:
        self.index += 1
        left = self.minutes_left()
        eta = "time left: after the first run" if left is None else f"~{left:.0f} min left"
        print(f"quadgpt study: [{self.index}/{self.n_runs}] {label} | {(time.time() - self.start) / 60:.1f} min so far, {eta}",
              flush=True)
        return time.time()

    def end(self, job: tuple, started: float, reused: bool) -> None:
        name, work = self.pending.pop(job, ("", 0.0))
        if not reused and work:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - started
            self.work[name] = self.work.get(name, 0.0) + work


def sweep_config(variant: Variant, lr: float, steps: int, seed: int, runs_dir: Path) -> Config:
    """Phase A of ``variant`` at ``lr`` for ``steps``, written to a folder of ``runs_dir`` named by its settings."""
    base = with_lr(variant.config, lr)
    train = dataclasses.replace(base.train, max_steps=steps, max_tokens=0, max_time=0.0, seed=seed, resume="auto",
                                init_from="", eval_interval=max(1, steps // 8))
    config = dataclasses.replace(base, train=train)
    config.train.out_dir = str(runs_dir / f"{variant.config.model.ffn.kind}-lr{lr:g}-{key_of(run_payload(config))}")
    return config


def sweep_run(config: Config) -> dict[str, Any]:
    """Train (or reuse) one ``sweep_config`` run; its row of the sweep table."""
    summary = run_phase(config)
    return {"lr": config.train.lr, "final_val_loss": summary["final_val_loss"], "run_dir": config.train.out_dir}


def is_finished(config: Config) -> bool:
    return (Path(config.train.out_dir) / SUMMARY_FILE).is_file()


def pick_best(sweep: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Each variant's lr of lowest final loss (same task and windows, so nats rank as bits/byte do)."""
    return {name: min(rows, key=lambda r: r["final_val_loss"])["lr"] for name, rows in sweep.items()}


def sweep_table(sweep: dict[str, list[dict[str, Any]]], best: dict[str, float], factor: float) -> str:
    lrs = sorted({r["lr"] for rows in sweep.values() for r in rows})
    lines = ["| FFN | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best |", "|" + "---|" * (len(lrs) + 2)]
    for name, rows in sweep.items():
        by_lr = {r["lr"]: r["final_val_loss"] * factor for r in rows}
        cells = [f"**{by_lr[lr]:.4f}**" if lr == best[name] else (f"{by_lr[lr]:.4f}" if lr in by_lr else "") for lr in lrs]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best[name]:g} |")
    return "\n".join(lines)


def check_order_points(steps_a: int, eval_interval: int) -> None:
    """Refuse a phase A whose evaluations miss a share of ``ORDER_FRACTIONS`` of its ``steps_a``.

    The report ranks the variants at 50%, 75% and 100% of phase A's tokens; without an evaluation
    at those steps it could only rank them somewhere nearby. The last evaluation is always made.
    Raises ConfigError with an interval (or step count) that works.
    """
    fractions = [fraction for fraction in ORDER_FRACTIONS if fraction < 1]
    shares = " and ".join(f"{fraction:.0%}" for fraction in fractions)
    multiple = math.lcm(*(Fraction(fraction).limit_denominator(1000).denominator for fraction in fractions))
    if steps_a % multiple:
        raise ConfigError(f"study.steps_a ({steps_a}) must be a multiple of {multiple}: the report ranks the variants "
                          f"at {shares} of phase A's steps.")
    steps = [int(fraction * steps_a) for fraction in fractions]
    if any(step % eval_interval for step in steps):
        raise ConfigError(f"train.eval_interval ({eval_interval}) does not evaluate phase A at steps "
                          f"{' and '.join(map(str, steps))} ({shares} of study.steps_a = {steps_a}), where the "
                          f"report ranks the variants; --train.eval_interval={math.gcd(*steps)} does.")


def load_variants(config_path: str | None, overrides: list[str], spec: str) -> dict[str, Variant]:
    return {
        name: Variant(name, load_config(config_path, overrides + ["model.ffn.hidden=0"] + extra), freeze)
        for name, (extra, freeze) in parse_study_variants(spec).items()
    }


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the FFN study: ``quadgpt study --config configs/study-cpu.toml
    [--section.key=value ...]`` (study settings are the config's [study] section, e.g.
    ``--study.seeds=1,2,3``). Writes results.json, results.md, sweep.json and plots into
    ``study.out``; rerunning the same command reuses every finished run."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="quadgpt study", description=main.__doc__)
    try:
        config_path, overrides, rest = split_config_args(argv)
        parser.parse_args(rest)
        study = load_config(config_path, overrides).study
        variants = load_variants(config_path, overrides, study.variants)
        seeds = [int(s) for s in study.seeds.split(",") if s.strip()]
        lrs = [float(s) for s in study.lrs.split(",") if s.strip()]
        if not seeds or not lrs:
            raise ConfigError("study.seeds and study.lrs need at least one value each.")
        check_order_points(study.steps_a, next(iter(variants.values())).config.train.eval_interval)
        sizes = size_table({n: v.config for n, v in variants.items()})
        mismatch = check_matched(sizes, PARAM_TOLERANCE)
        if mismatch:
            raise ConfigError("Variants are not parameter-matched within 2%: " + "; ".join(mismatch) + ".")
        for name in variants.keys() & PHASE_B_VARIANTS.keys():
            if PHASE_B_VARIANTS[name][0] not in variants:
                raise ConfigError(f"study.variants: {name} shares phase A with {PHASE_B_VARIANTS[name][0]}; "
                                  f"list {PHASE_B_VARIANTS[name][0]} too.")
        lr_from = Path(study.lr_from) / SWEEP_FILE if study.lr_from else None
        if lr_from is not None and not lr_from.is_file():
            raise ConfigError(f"study.lr_from: '{lr_from}' does not exist; run that study's sweep first.")
        tokenizer = next(iter(variants.values())).config.model.tokenizer
        tasks = [prepared_task(s, Path(study.data_root), tokenizer) for s in (study.task_a, study.task_b)]
    except (ConfigError, ValueError) as err:
        print(f"quadgpt study: error: {err}", file=sys.stderr)
        return 2
    for v in variants.values():  # the data of every run is the study's two tasks
        v.config = dataclasses.replace(v.config, data=dataclasses.replace(v.config.data, dataset=tasks[0]))
    out = Path(study.out)
    any_config = next(iter(variants.values())).config
    factor_a = validation_bits_per_nat(tasks[0], any_config.model.block_size, any_config.data.val_windows, tokenizer)
    sweep_steps = study.sweep_steps or max(1, study.steps_a // 2)
    sweep_by_kind = {n: v for n, v in variants.items() if n not in PHASE_B_VARIANTS}  # phase A as its base's
    tokens_per_step = any_config.train.batch_size * any_config.model.block_size
    flops = {n: sizes[n]["flops_per_token"] for n in variants}
    n_sweep = 0 if lr_from or len(lrs) == 1 else len(sweep_by_kind) * len(lrs)

    def steps_of(name: str) -> int:  # a phase-B variant trains phase B only (phase A is its base's)
        return study.steps_b if name in PHASE_B_VARIANTS else study.steps_a + study.steps_b

    progress = Progress(n_sweep + len(seeds) * len(variants))
    sweep_configs = {(name, lr): sweep_config(variant, lr, sweep_steps, study.sweep_seed, out / "sweep")
                     for name, variant in sweep_by_kind.items() for lr in lrs} if n_sweep else {}
    for (name, lr), config in sweep_configs.items():
        if not is_finished(config):
            progress.add(("sweep", name, lr), name, tokens_per_step * sweep_steps * flops[name])
    for seed in seeds:  # which seed runs are finished is known once the lrs are
        for name in variants:
            progress.add(("seed", seed, name), name, tokens_per_step * steps_of(name) * flops[name])
    start = time.time()
    try:
        if lr_from is not None:
            best = {n: json.loads(lr_from.read_text())["best_lr"][PHASE_B_VARIANTS.get(n, (n,))[0]] for n in variants}
            sweep: dict[str, list[dict[str, Any]]] = {}
        elif len(lrs) == 1:
            best, sweep = {n: lrs[0] for n in variants}, {}
        else:
            sweep = {}
            for (name, lr), config in sweep_configs.items():
                t0 = progress.begin(("sweep", name, lr), f"sweep {name} lr {lr:g} ({sweep_steps} steps, seed {study.sweep_seed})")
                reused = is_finished(config)
                sweep.setdefault(name, []).append(sweep_run(config))
                progress.end(("sweep", name, lr), t0, reused)
            best = pick_best(sweep)
            for name in variants:
                best.setdefault(name, best[PHASE_B_VARIANTS.get(name, (name,))[0]])
            write_json_atomic(out / SWEEP_FILE, {"lrs": lrs, "steps": sweep_steps, "seed": study.sweep_seed,
                                                 "runs": sweep, "best_lr": best})
        results: dict[str, Any] = {
            "command": "quadgpt study " + shlex.join(argv),
            "settings": {
                "task_a": study.task_a, "task_b": study.task_b, "tasks": tasks, "steps_a": study.steps_a,
                "steps_b": study.steps_b, "eval_every_b": study.eval_every_b, "seeds": seeds, "lrs": lrs,
                "sweep_steps": sweep_steps, "best_lr": best, "config": config_path, "overrides": overrides,
                "tokenizer": tokenizer, "tokens_per_step": tokens_per_step, "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            },
            "variants": {n: sizes[n] | {"lr": best[n], "freeze_base_in_b": v.freeze_base} for n, v in variants.items()},
            "runs": [],
        }
        extra = study_markdown(results, sweep, best, factor_a, tasks[0], tokenizer)
        plan = []  # (seed, name, config, probe settings, run folder)
        for seed in seeds:  # seed-major: a partial study already covers every variant
            for name, variant in variants.items():
                config = with_lr(variant.config, best[name])
                settings = ProbeSettings(tasks=tasks, steps=[study.steps_a, study.steps_b], eval_every=study.eval_every_b,
                                         freeze_base=variant.freeze_base)
                key = key_of({"run": run_payload(config), "probe": dataclasses.asdict(settings), "seed": seed})
                run_dir = out / "runs" / name / f"seed{seed}-{key}"
                plan.append((seed, name, config, settings, run_dir))
                if (run_dir / "result.json").is_file():  # finished in an earlier session: reused
                    progress.drop(("seed", seed, name))
        run_dirs: dict[tuple[int, str], Path] = {(seed, name): run_dir for seed, name, *_, run_dir in plan}
        for seed, name, config, settings, run_dir in plan:
            t0 = progress.begin(("seed", seed, name), f"{name} seed {seed} lr {best[name]:g}")
            if name in PHASE_B_VARIANTS:  # listed after its base, which has just run this seed
                share_phase_a(run_dirs[seed, PHASE_B_VARIANTS[name][0]], run_dir, tasks)
            reused = (run_dir / "result.json").is_file()
            results["runs"].append(run_one(config, settings, run_dir, seed, name))
            progress.end(("seed", seed, name), t0, reused)
            write_report(results, out, extra)  # after every run, so a partial study is readable
    except (ConfigError, DataError, CheckpointError) as err:  # e.g. a run folder made with other settings
        print(f"quadgpt study: error: {err}", file=sys.stderr)
        return 2
    except (PhaseInterrupted, TrainingDiverged, ResultLost) as err:
        print(f"quadgpt study: {err} Finished runs are kept.", file=sys.stderr)
        return 1
    results["settings"]["wall_s_this_session"] = round(time.time() - start, 1)
    write_report(results, out, extra + f"\nWall time of this session: {(time.time() - start) / 60:.1f} min.\n")
    print(markdown_table(summarize(results)))
    print(f"quadgpt study: report in {out} ({(time.time() - start) / 60:.1f} min)")
    return 0


def study_markdown(results: dict[str, Any], sweep: dict, best: dict[str, float], factor_a: float, task_a: str,
                   tokenizer: str) -> str:
    """The study's additions to results.md: the sweep, the unigram floor, the machine."""
    s = results["settings"]
    text = "\n## Learning-rate sweep (phase A, one seed)\n\n"
    if sweep:
        text += (f"Final bits/byte on A after {s['sweep_steps']} steps at each peak lr (min lr = lr / 10); "
                 "bold = the lr the seeds use.\n\n" + sweep_table(sweep, best, factor_a) + "\n")
    else:
        text += "No sweep in this study: lrs " + ", ".join(f"{n} {lr:g}" for n, lr in best.items()) + ".\n"
    text += (f"\nUnigram baseline of task A: {unigram_bits_per_byte(task_a, tokenizer):.4f} bits/byte "
             f"(a model that ignores context).\n\nMachine: {s['machine']}, torch {s['torch']}, "
             f"{s['torch_threads']} threads.\n")
    return text


if __name__ == "__main__":
    raise SystemExit(main())
