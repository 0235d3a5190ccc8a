"""``quadgpt compare``: train FFN kinds at matched parameters and report which is better.

Each variant (an FFN kind plus config overrides) is trained on task A with the same data,
tokens, schedule and seeds; that run is phase A of a forgetting probe, whose phase B then
trains on task B while evaluating A (``eval.forgetting``). Each run's final weights are also
scored by ``eval.perplexity`` on A's validation windows (loss, perplexity, bits per byte).

Widths: every variant uses its kind's parameter-matched default hidden width (``hidden = 0``);
the non-embedding parameter counts are checked against the first variant and a mismatch over
``PARAM_TOLERANCE`` is refused unless ``--allow-mismatch``.

The CPU default (tiny config, 4 kinds x 3 seeds) is sized to take about 40 minutes on an idle
2-core machine; ``eval.forgetting`` holds its budget (``DEFAULT_OVERRIDES``, step counts) and why.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from eval.forgetting import (
    DEFAULT_CONFIG,
    DEFAULT_EVAL_EVERY_B,
    DEFAULT_OVERRIDES,
    DEFAULT_STEPS_A,
    DEFAULT_STEPS_B,
    PhaseInterrupted,
    ProbeSettings,
    base_config,
    parse_seeds,
    plan_probe,
    prepared_task,
    run_probe,
    task_inputs,
)
from eval.perplexity import evaluate_windows, load_scorer
from eval.report import markdown_table, summarize, write_report
from quadgpt.atomic import write_json_atomic
from quadgpt.checkpoint import CheckpointError
from quadgpt.config import Config, ConfigError, split_config_args
from quadgpt.data import DataError, validation_windows
from quadgpt.safety import check_output_path

# name -> config overrides. Any FFN kind of the registry also works by its own name.
BUILTIN_VARIANTS: dict[str, list[str]] = {
    "mlp-gelu": ["model.ffn.kind=mlp", "model.ffn.activation=gelu"],
    "mlp-relu": ["model.ffn.kind=mlp", "model.ffn.activation=relu"],
    "mlp-relu2": ["model.ffn.kind=mlp", "model.ffn.activation=relu2"],
    "swiglu": ["model.ffn.kind=swiglu"],
    "quadratic": ["model.ffn.kind=quadratic"],
    "kan": ["model.ffn.kind=kan"],
    "kan-nobase": ["model.ffn.kind=kan", "model.ffn.base=none"],
}
DEFAULT_VARIANTS = "mlp-gelu,swiglu,quadratic,kan"
PARAM_TOLERANCE = 0.03  # relative non-embedding parameter mismatch accepted between variants

DEFAULT_SEEDS = "1,2,3"


def parse_variants(spec: str) -> dict[str, list[str]]:
    """``"mlp-gelu,kan,kan8=model.ffn.kind=kan;model.ffn.grid_size=8"`` -> {name: overrides}.

    A name alone is a built-in variant or an FFN kind; ``name=k=v;k=v`` defines a new one.
    """
    from quadgpt.ffn import FFN_REGISTRY

    variants: dict[str, list[str]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, rest = item.partition("=")
        if sep:
            overrides = [o.strip() for o in rest.split(";") if o.strip()]
            if not overrides or any("=" not in o for o in overrides):
                raise ConfigError(f"Variant '{item}' must look like name=section.key=value;section.key=value.")
        elif name in BUILTIN_VARIANTS:
            overrides = BUILTIN_VARIANTS[name]
        elif name in FFN_REGISTRY:
            overrides = [f"model.ffn.kind={name}"]
        else:
            known = ", ".join(list(BUILTIN_VARIANTS) + [k for k in FFN_REGISTRY if k not in BUILTIN_VARIANTS])
            raise ConfigError(f"Unknown variant '{name}'. Known: {known}; or define one as name=section.key=value;...")
        if name in variants:
            raise ConfigError(f"Variant '{name}' is listed twice.")
        variants[name] = overrides
    if not variants:
        raise ConfigError("No variant to compare: give --variants, e.g. mlp-gelu,swiglu,quadratic,kan.")
    return variants


def variant_configs(config_path: str | None, overrides: list[str], variants: dict[str, list[str]]) -> dict[str, Config]:
    """Each variant's config: defaults, the config file (without one: the CPU budget of
    ``eval.forgetting.base_config``), the command-line overrides, then the variant's own (with
    ``hidden = 0`` unless the variant sets it: the matched width)."""
    return {
        name: base_config(config_path, overrides + ["model.ffn.hidden=0"] + extra) for name, extra in variants.items()
    }


def size_table(configs: dict[str, Config]) -> dict[str, dict[str, Any]]:
    """Hidden width, parameters and FLOPs/token of each variant (``quadgpt.info.kind_table``)."""
    from quadgpt.info import kind_table

    return {name: kind_table(cfg.model, [cfg.model.ffn.kind])[0] for name, cfg in configs.items()}


def check_matched(sizes: dict[str, dict[str, Any]], tolerance: float = PARAM_TOLERANCE) -> list[str]:
    """Variants whose non-embedding parameters differ from the first one's by more than
    ``tolerance`` (relative), as messages; empty when all are matched."""
    names = list(sizes)
    ref = sizes[names[0]]["non_embedding_params"]
    problems = []
    for name in names[1:]:
        ratio = sizes[name]["non_embedding_params"] / ref
        if abs(ratio - 1) > tolerance:
            problems.append(f"{name} has {ratio:.3f}x the non-embedding parameters of {names[0]}")
    return problems


def run_label(name: str, settings: ProbeSettings) -> str:
    """The run folder's name: the variant, plus the mitigations that change its phase B, so that
    a finished run is only ever reused by a comparison with the same settings."""
    label = name
    if settings.freeze_base:
        label += "-frozenbase"
    if settings.replay_fraction:
        label += f"-replay{settings.replay_fraction:g}"
    return label


def check_runs(configs: dict[str, Config], probes: dict[str, ProbeSettings], runs_dir: Path, seeds: list[int],
               *, with_files: bool = True) -> None:
    """Check every run of the comparison before the first one starts (``eval.forgetting.plan_probe``):
    its configs, and with ``with_files`` its data, disk space and any earlier run in its folder."""
    for seed in seeds:
        for name, config in configs.items():
            run_dir = runs_dir / run_label(name, probes[name]) / f"seed{seed}"
            plan_probe(config, probes[name], run_dir, seed, with_files=with_files)


def run_one(config: Config, settings: ProbeSettings, run_dir: Path, seed: int, name: str) -> dict[str, Any]:
    """Probe (phase A = the training run, phase B = forgetting) and perplexity of one variant and
    seed; the result is stored in ``run_dir/result.json``, and a stored result is reused."""
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.time()
    probe = run_probe(config, settings, run_dir, seed)
    phase_a = Path(probe["phases"][0]["run_dir"])
    scorer = load_scorer(phase_a / "last")
    x, y = validation_windows(settings.tasks[0], config.model.block_size, config.data.val_windows)
    ppl = evaluate_windows(scorer.logits_fn, x, y, batch_size=config.train.batch_size, tokenizer_name=scorer.tokenizer_name)
    result = {
        "variant": name,
        "seed": seed,
        "perplexity": ppl.to_dict(),
        "tokens_per_s": probe["phases"][0]["tokens_per_s"],
        "train_tokens": probe["phases"][0]["tokens"],
        "wall_s": round(time.time() - start, 1),  # this session's time: a resumed run counts only its last part
        "probe": probe,
    }
    write_json_atomic(done, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Compare FFN kinds at matched non-embedding parameters: ``quadgpt compare [--variants
    mlp-gelu,swiglu,quadratic,kan] [--seeds 1,2,3] [--out runs/compare] [--config F]
    [--section.key=value ...]``. Trains each variant on task A, then on task B (forgetting
    probe), scores perplexity, and writes results.json, results.md and PNG plots into --out.
    Rerunning the same command resumes: finished runs are reused, an interrupted one continues
    from its last checkpoint."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="quadgpt compare", description=main.__doc__)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated (default {DEFAULT_VARIANTS})")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"comma-separated training seeds (default {DEFAULT_SEEDS})")
    parser.add_argument("--task-a", default="builtin:stdlib-code", help="corpus source or prepared folder trained first")
    parser.add_argument("--task-b", default="builtin:stdlib-prose", help="corpus source or prepared folder trained second")
    parser.add_argument("--steps-a", type=int, default=DEFAULT_STEPS_A, help="optimizer steps on task A")
    parser.add_argument("--steps-b", type=int, default=DEFAULT_STEPS_B, help="optimizer steps on task B")
    parser.add_argument("--eval-every-b", type=int, default=DEFAULT_EVAL_EVERY_B, help="evaluation interval in phase B")
    parser.add_argument("--replay", type=float, default=0.0, help="fraction of each phase-B batch replayed from A")
    parser.add_argument("--freeze-base", action="store_true", help="KAN variants: freeze the base branch in phase B")
    parser.add_argument("--data-root", default="data", help="where corpora named by source are prepared")
    parser.add_argument("--out", default="runs/compare", help="results folder: results.json, results.md, plots")
    parser.add_argument("--runs", default="", help="folder of the training runs (default OUT/runs)")
    parser.add_argument("--allow-mismatch", action="store_true", help=f"accept > {PARAM_TOLERANCE * 100:g}%% parameter mismatch")
    try:
        config_path, overrides, rest = split_config_args(argv)
        args = parser.parse_args(rest)
        variants = parse_variants(args.variants)
        seeds = parse_seeds(args.seeds)
        configs = variant_configs(config_path, overrides, variants)
        if args.freeze_base and not any(c.model.ffn.kind == "kan" for c in configs.values()):
            raise ConfigError("--freeze-base needs a KAN variant.")
        out = Path(args.out)
        runs_dir = Path(args.runs) if args.runs else out / "runs"
        probes = {
            name: ProbeSettings(
                tasks=[args.task_a, args.task_b], steps=[args.steps_a, args.steps_b], eval_every=args.eval_every_b,
                replay_fraction=args.replay, freeze_base=args.freeze_base and config.model.ffn.kind == "kan",
            )
            for name, config in configs.items()
        }
        check_runs(configs, probes, runs_dir, seeds, with_files=False)  # the configs alone, before preparing data
        sizes = size_table(configs)
        mismatch = check_matched(sizes)
        if mismatch and not args.allow_mismatch:
            raise ConfigError("Variants are not parameter-matched: " + "; ".join(mismatch) + ". Set model.ffn.hidden in "
                              "the variant, or pass --allow-mismatch to compare anyway.")
        tokenizer = next(iter(configs.values())).model.tokenizer
        task_paths = task_inputs([args.task_a, args.task_b], Path(args.data_root), tokenizer)
        check_output_path(out, task_paths, suffix="compare")
        check_output_path(runs_dir, task_paths, what="--runs", suffix="runs")
        tasks = [prepared_task(source, Path(args.data_root), tokenizer) for source in (args.task_a, args.task_b)]
        for settings in probes.values():
            settings.tasks = tasks
        check_runs(configs, probes, runs_dir, seeds)  # data, disk, and earlier runs in runs_dir
    except (ConfigError, DataError, CheckpointError, ValueError) as err:
        print(f"quadgpt compare: error: {err}", file=sys.stderr)
        return 2
    any_config = next(iter(configs.values()))
    results: dict[str, Any] = {
        "command": "quadgpt compare " + shlex.join(argv),
        "settings": {
            "task_a": args.task_a, "task_b": args.task_b, "tasks": tasks, "steps_a": args.steps_a,
            "steps_b": args.steps_b, "eval_every_b": args.eval_every_b, "seeds": seeds, "replay": args.replay,
            "freeze_base": args.freeze_base, "config": config_path or DEFAULT_CONFIG,
            "overrides": overrides if config_path else DEFAULT_OVERRIDES + overrides,
            "tokens_per_step": any_config.train.batch_size * any_config.model.block_size,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        },
        "variants": {name: sizes[name] | {"overrides": variants[name]} for name in variants},
        "runs": [],
    }
    for name, size in sizes.items():
        print(f"quadgpt compare: {name}: hidden {size['hidden']}, {size['non_embedding_params']:,} non-embedding params")
    from quadgpt.trainer import ResultLost, TrainingDiverged

    start = time.time()
    for seed in seeds:  # seed-major: a partial comparison already covers every variant
        for name, config in configs.items():
            settings = probes[name]
            print(f"quadgpt compare: [{time.time() - start:7.0f}s] {name} seed {seed}", flush=True)
            run_dir = runs_dir / run_label(name, settings) / f"seed{seed}"
            try:
                results["runs"].append(run_one(config, settings, run_dir, seed, name))
            except (PhaseInterrupted, TrainingDiverged, ResultLost) as err:
                print(f"quadgpt compare: {name} seed {seed}: {err} Finished runs are kept.", file=sys.stderr)
                return 1
            write_report(results, out)  # after every run, so a partial comparison is readable
    results["settings"]["wall_s"] = round(time.time() - start, 1)
    write_report(results, out)
    print(markdown_table(summarize(results)))
    print(f"quadgpt compare: report in {out} ({time.time() - start:.0f}s)")
    return 0
