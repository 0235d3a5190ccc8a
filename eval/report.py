"""The comparison's report: per-variant summary over seeds, a Markdown table and PNG plots.

Reads only the plain ``results.json`` structure written by ``eval.compare`` (a list of runs, each
with its training curve, perplexity and forgetting probe), so a report can be redrawn from a
results file alone: ``python -m eval.report RESULTS_DIR``.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from quadgpt import metrics
from quadgpt.atomic import save_figure_atomic, write_json_atomic, write_text_atomic

# metric key in a run -> (column title, format)
SEED_METRICS = {
    "val_loss": ("val loss A", "{:.3f}"),
    "perplexity": ("ppl A", "{:.1f}"),
    "bits_per_byte": ("bits/byte A", "{:.3f}"),
    "forgetting": ("forgetting A", "{:+.3f}"),
    "forgetting_ppl_ratio": ("ppl ratio A", "{:.2f}"),
    "max_forgetting": ("max forgetting", "{:+.3f}"),
    "plasticity": ("plasticity B", "{:.3f}"),
}


def run_scalars(run: dict[str, Any]) -> dict[str, float]:
    """The per-seed numbers a run contributes to the table."""
    probe = run["probe"]
    return {
        "val_loss": run["perplexity"]["loss"],
        "perplexity": run["perplexity"]["perplexity"],
        "bits_per_byte": run["perplexity"]["bits_per_byte"],
        "forgetting": probe["forgetting"],
        "forgetting_ppl_ratio": probe["forgetting_ppl_ratio"],
        "max_forgetting": probe["max_forgetting"],
        "plasticity": probe["plasticity"],
        "tokens_per_s": run["tokens_per_s"],
    }


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant: its size and cost, and mean/std over seeds of every metric."""
    rows = []
    for name, variant in results["variants"].items():
        runs = [r for r in results["runs"] if r["variant"] == name]
        if not runs:
            continue
        scalars = [run_scalars(r) for r in runs]
        row = {"variant": name, "seeds": [r["seed"] for r in runs]} | {
            k: variant[k] for k in ("hidden", "non_embedding_params", "flops_per_token")
        }
        for key in list(SEED_METRICS) + ["tokens_per_s"]:
            row[key] = metrics.mean_std([s[key] for s in scalars])
        rows.append(row)
    return rows


def _pm(value: tuple[float, float], fmt: str, n_seeds: int) -> str:
    """``mean ± std``; just the mean for a single seed, whose spread is unknown, not zero."""
    mean, std = value
    return f"{fmt.format(mean)} ± {fmt.format(std).lstrip('+')}" if n_seeds > 1 else fmt.format(mean)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (mean ± sample std over the listed seeds)."""
    head = ["FFN", "hidden", "non-emb params", "GFLOPs/token", "tokens/s", "seeds"]
    head += [title for title, _ in SEED_METRICS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row["variant"],
            str(row["hidden"]),
            f"{row['non_embedding_params']:,}",
            f"{row['flops_per_token'] / 1e9:.4f}",
            f"{row['tokens_per_s'][0]:,.0f}",
            str(len(row["seeds"])),
        ]
        cells += [_pm(row[key], fmt, len(row["seeds"])) for key, (_, fmt) in SEED_METRICS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(
    results: dict[str, Any], keys: tuple[str, ...] = ("val_loss", "forgetting", "plasticity")
) -> list[dict[str, Any]]:
    """Per variant, the seed-by-seed difference from the first variant (same seed, same data
    order and initial-weight seed), mean ± std: the spread of a difference between kinds is
    usually smaller than the spread of either kind's own numbers over seeds."""
    names = [n for n in results["variants"] if any(r["variant"] == n for r in results["runs"])]
    by_key = {(r["variant"], r["seed"]): run_scalars(r) for r in results["runs"]}
    rows = []
    for name in names[1:]:
        seeds = [seed for (variant, seed) in by_key if variant == name and (names[0], seed) in by_key]
        if not seeds:
            continue
        row = {"variant": name, "reference": names[0], "seeds": seeds}
        for key in keys:
            row[key] = metrics.mean_std([by_key[(name, s)][key] - by_key[(names[0], s)][key] for s in seeds])
        rows.append(row)
    return rows


def differences_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``paired_differences`` (negative val loss = better than the reference)."""
    head = ["FFN", "vs", "seeds", "Δ val loss A", "Δ forgetting A", "Δ plasticity B"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        n = len(row["seeds"])
        cells = [row["variant"], row["reference"], str(n)]
        cells += [_pm(row[key], "{:+.3f}", n) for key in ("val_loss", "forgetting", "plasticity")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_curve(curves: list[list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """Average y over runs at each shared x position (runs share their evaluation steps)."""
    length = min(len(c) for c in curves)
    xs = [statistics.fmean([c[i][0] for c in curves]) for i in range(length)]
    ys = [statistics.fmean([c[i][1] for c in curves]) for i in range(length)]
    return xs, ys


def plot_curves(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Three PNGs: val loss on A vs tokens and vs wall time (phase A), and loss on A and on B
    through phase B. Thin lines are seeds, thick lines their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    names = [n for n in results["variants"] if any(r["variant"] == n for r in results["runs"])]
    colors = {n: f"C{i}" for i, n in enumerate(names)}

    def runs_of(name: str) -> list[dict[str, Any]]:
        return [r for r in results["runs"] if r["variant"] == name]
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        written.append(save_figure_atomic(fig, out_dir / name, dpi=120))

    for x_key, x_label, file_name in (
        ("tokens", "training tokens", "val_loss_vs_tokens.png"),
        ("elapsed", "wall time (s)", "val_loss_vs_time.png"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name in names:
            curves = [[(p[x_key], p["loss"]) for p in r["probe"]["curve_phase_a"]] for r in runs_of(name)]
            for c in curves:
                ax.plot(*zip(*c), color=colors[name], alpha=0.25, linewidth=0.8)
            ax.plot(*_mean_curve(curves), color=colors[name], linewidth=2, label=name)
        after_start = [p["loss"] for r in results["runs"] for p in r["probe"]["curve_phase_a"][1:2]]
        if after_start:  # the step-0 loss (~ln vocab) would flatten the part worth seeing
            ax.set_ylim(top=max(after_start) * 1.02)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"val loss on A ({results['settings']['task_a']}), nats")
        ax.set_title("Phase A training")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, file_name)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, title in ((axes[0], "loss_A", "loss on A (forgetting)"), (axes[1], "loss_B", "loss on B (learning)")):
        for name in names:
            curves = [[(p["step"], p[key]) for p in r["probe"]["curve_phase_b"]] for r in runs_of(name)]
            for c in curves:
                ax.plot(*zip(*c), color=colors[name], alpha=0.25, linewidth=0.8)
            ax.plot(*_mean_curve(curves), color=colors[name], linewidth=2, label=name)
        ax.set_xlabel("phase B step")
        ax.set_ylabel("val loss, nats")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Phase B: training on {results['settings']['task_b']} after {results['settings']['task_a']}")
    save(fig, "forgetting_phase_b.png")
    return written


def write_report(results: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and the plots into ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    results = results | {"summary": rows}
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    settings = results["settings"]
    text = (
        f"# FFN comparison\n\n"
        f"Command: `{results['command']}`\n\n"
        f"Task A `{settings['task_a']}` for {settings['steps_a']} steps, then task B `{settings['task_b']}` for "
        f"{settings['steps_b']} steps; {settings['tokens_per_step']:,} tokens/step; seeds {settings['seeds']}. "
        "Losses in nats/token on fixed validation windows; mean ± sample std over seeds. Forgetting = loss on A after B "
        "- loss on A after A (ppl ratio = exp of it); max forgetting = its peak during B; plasticity = drop of B's loss "
        "during B.\n\n" + markdown_table(rows) + "\n"
    )
    differences = paired_differences(results)
    if differences:
        text += "\nDifferences from the first variant, paired by seed (mean ± std over seeds):\n\n"
        text += differences_table(differences) + "\n"
    write_json_atomic(paths["json"], results)
    write_text_atomic(paths["markdown"], text)
    for plot in plot_curves(results, out_dir):
        paths[plot.stem] = plot
    return paths


def main(argv: list[str] | None = None) -> int:
    """Redraw results.md and the plots of a comparison folder from its results.json."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m eval.report RESULTS_DIR", file=sys.stderr)
        return 2
    path = Path(argv[0]) / "results.json"
    if not path.is_file():
        print(f"eval.report: '{path}' does not exist: give a folder written by `quadgpt compare`.", file=sys.stderr)
        return 2
    results = json.loads(path.read_text())
    results.pop("summary", None)
    for name, written in write_report(results, argv[0]).items():
        print(f"{name}: {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
