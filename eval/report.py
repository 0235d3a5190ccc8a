"""The comparison's report: per-variant means with 95% CIs, paired differences, the ordering over
training, a Markdown file and PNG plots, all in bits per byte (comparable across tokenizers).

Reads only the plain ``results.json`` structure written by ``eval.compare`` / ``eval.study`` (a
list of runs, each with its training curve, perplexity and forgetting probe), so a report can be
redrawn from a results file alone: ``python -m eval.report RESULTS_DIR``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from eval.stats import Interval, mean_ci, paired_ci, verdict
from quadgpt.atomic import save_figure_atomic, write_json_atomic, write_text_atomic

# metric key in a run -> (column title, format); bits per byte first: the headline unit
SEED_METRICS = {
    "bits_per_byte": ("bits/byte A", "{:.4f}"),
    "forgetting_bpb": ("forgetting A (bits/byte)", "{:+.4f}"),
    "max_forgetting_bpb": ("max forgetting A", "{:+.4f}"),
    "plasticity_bpb": ("plasticity B (bits/byte)", "{:.4f}"),
    "val_loss": ("val loss A (nats/token)", "{:.3f}"),
    "forgetting_ppl_ratio": ("ppl ratio A", "{:.2f}"),
}
# (metric, question, sentence subject): the two questions the project asks
QUESTIONS = (
    ("bits_per_byte", "Q1 (quality at matched parameters)", "bits/byte on A after phase A"),
    ("forgetting_bpb", "Q2 (forgetting)", "forgetting of A during phase B, bits/byte"),
)
BASELINE = "mlp-gelu"
# the KAN locality test: variants paired against plain kan, not against the MLP baseline.
# Locality (the continual-learning argument of the KAN paper, Liu et al. 2024, arXiv:2404.19756): a
# B-spline changes only near the inputs it is trained on, so a KAN should forget less; its global
# SiLU base branch is what could undo that.
LOCALITY_REFERENCE = "kan"
LOCALITY_VARIANTS = ("kan-nobase", "kan-frozenbase")
ORDER_FRACTIONS = (0.5, 0.75, 1.0)


def factor_a(run: dict[str, Any]) -> float:
    """Bits per byte per nat/token on task A's validation windows (results older than the bpb
    headline: derived from the run's perplexity pass, which scored the same windows)."""
    probe = run["probe"]
    if "bits_per_nat" in probe:
        return probe["bits_per_nat"][0]
    return run["perplexity"]["bits_per_byte"] / run["perplexity"]["loss"]


def run_scalars(run: dict[str, Any]) -> dict[str, float]:
    """The per-seed numbers a run contributes to the tables."""
    probe = run["probe"]
    a = factor_a(run)
    b = probe["bits_per_nat"][1] if "bits_per_nat" in probe else math.nan  # unknown in old results
    return {
        "val_loss": run["perplexity"]["loss"],
        "bits_per_byte": run["perplexity"]["bits_per_byte"],
        "forgetting_bpb": probe["forgetting"] * a,
        "max_forgetting_bpb": probe["max_forgetting"] * a,
        "plasticity_bpb": probe["plasticity"] * b,
        "forgetting_ppl_ratio": probe["forgetting_ppl_ratio"],
        "tokens_per_s": run["tokens_per_s"],
    }


def _names(results: dict[str, Any]) -> list[str]:
    """Variants with at least one run, in the results' order."""
    return [n for n in results["variants"] if any(r["variant"] == n for r in results["runs"])]


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant: its size and cost, and the mean with 95% CI over seeds of every metric."""
    rows = []
    for name in _names(results):
        variant = results["variants"][name]
        runs = [r for r in results["runs"] if r["variant"] == name]
        scalars = [run_scalars(r) for r in runs]
        row = {"variant": name, "seeds": [r["seed"] for r in runs]} | {
            k: variant[k] for k in ("hidden", "non_embedding_params", "flops_per_token")
        }
        for key in list(SEED_METRICS) + ["tokens_per_s"]:
            row[key] = mean_ci([s[key] for s in scalars])
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (mean ± 95% CI half-width over the listed seeds)."""
    ref = next((r["non_embedding_params"] for r in rows if r["variant"] == BASELINE), rows[0]["non_embedding_params"])
    head = ["FFN", "hidden", "non-emb params", "vs mlp", "MFLOPs/token", "tokens/s", "seeds"]
    head += [title for title, _ in SEED_METRICS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row["variant"],
            str(row["hidden"]),
            f"{row['non_embedding_params']:,}",
            f"{row['non_embedding_params'] / ref:.3f}",
            f"{row['flops_per_token'] / 1e6:,.2f}",
            f"{row['tokens_per_s'].mean:,.0f}",
            str(len(row["seeds"])),
        ]
        cells += [row[key].format(fmt) for key, (_, fmt) in SEED_METRICS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_name(results: dict[str, Any]) -> str:
    """The baseline differences are taken against: mlp-gelu when present, else the first variant."""
    names = _names(results)
    return BASELINE if BASELINE in names else names[0]


def paired_differences(
    results: dict[str, Any], keys: tuple[str, ...] = ("bits_per_byte", "forgetting_bpb", "plasticity_bpb"),
    reference: str | None = None, variants: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Per variant (every one, or those of ``variants``), the seed-by-seed difference from
    ``reference`` (default: the baseline; same seed = same data order and initial-weight seed),
    as a mean with its 95% CI."""
    ref = reference or reference_name(results)
    by_variant: dict[str, dict[int, dict[str, float]]] = {}
    for r in results["runs"]:
        by_variant.setdefault(r["variant"], {})[r["seed"]] = run_scalars(r)
    if ref not in by_variant:
        return []
    rows = []
    for name in _names(results):
        if name == ref or (variants is not None and name not in variants):
            continue
        seeds = sorted(set(by_variant[name]) & set(by_variant[ref]))
        if not seeds:
            continue
        row = {"variant": name, "reference": ref, "seeds": seeds}
        for key in keys:
            row[key] = paired_ci({s: by_variant[name][s][key] for s in seeds}, {s: by_variant[ref][s][key] for s in seeds})
        rows.append(row)
    return rows


def differences_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``paired_differences`` (negative bits/byte = better than the reference)."""
    head = ["FFN", "vs", "seeds", "Δ bits/byte A", "95% CI", "Δ forgetting A (bits/byte)", "95% CI", "Δ plasticity B"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["variant"], row["reference"], str(len(row["seeds"]))]
        for key in ("bits_per_byte", "forgetting_bpb"):
            d: Interval = row[key]
            cells += [f"{d.mean:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]" if d.n > 1 else "n/a"]
        cells.append(row["plasticity_bpb"].format("{:+.4f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]], questions: tuple[tuple[str, str, str], ...] = QUESTIONS) -> list[str]:
    """One plain sentence per question and variant: resolved (CI excludes 0) or not."""
    out = []
    for key, question, subject in questions:
        for row in rows:
            out.append(verdict(row["variant"], row["reference"], f"{question}, {subject}", row[key], "bits/byte", "better"))
    return out


def _curve_bpb(run: dict[str, Any]) -> list[tuple[float, float, float]]:
    """Phase A's evaluations as (tokens, elapsed s, bits/byte on A)."""
    a = factor_a(run)
    return [(p["tokens"], p["elapsed"], p["loss"] * a) for p in run["probe"]["curve_phase_a"]]


def shares_phase_a(results: dict[str, Any]) -> set[str]:
    """Variants whose phase A is another variant's (kan-frozenbase trains only phase B)."""
    return {n for n, v in results["variants"].items() if v.get("freeze_base_in_b")}


def ordering(results: dict[str, Any], fractions: tuple[float, ...] = ORDER_FRACTIONS) -> dict[str, Any]:
    """The variants ranked by mean bits/byte on A (best first) at the evaluation nearest each
    fraction of phase A's tokens, and whether that ranking is the same at every fraction.

    ``evaluated_at`` gives, per fraction, the share of the tokens where that evaluation really was:
    when the evaluation interval does not divide a fraction of the steps, the nearest evaluation
    stands in for it, and the text says so instead of labelling it with the fraction asked for.
    """
    ranks, evaluated_at = {}, {}
    shared = shares_phase_a(results)
    for fraction in fractions:
        means, shares = {}, set()
        for name in (n for n in _names(results) if n not in shared):
            values = []
            for run in (r for r in results["runs"] if r["variant"] == name):
                curve = _curve_bpb(run)
                target = fraction * curve[-1][0]
                point = min(curve, key=lambda p: abs(p[0] - target))
                shares.add(round(point[0] / curve[-1][0], 4))
                values.append(point[2])
            means[name] = statistics.fmean(values)
        label = f"{fraction:.0%}"
        ranks[label] = sorted(means, key=means.get)
        evaluated_at[label] = sorted(shares)
    orders = list(ranks.values())
    return {"ranking": ranks, "evaluated_at": evaluated_at, "stable": all(o == orders[0] for o in orders)}


def ordering_text(order: dict[str, Any]) -> str:
    lines = ["| share of phase A's tokens | ranking by bits/byte on A (best first) |", "|---|---|"]
    for share, names in order["ranking"].items():
        actual = [f"{a:.0%}" for a in order.get("evaluated_at", {}).get(share, [])]
        if actual and actual != [share]:  # (empty in a results.json older than evaluated_at)
            share += f" (no evaluation there; nearest: {', '.join(actual)})"
        lines.append(f"| {share} | {' < '.join(names)} |")
    if order["stable"]:
        note = "The ordering is the same at every point: the runs are long enough for the ranking they show."
    else:
        note = ("The ordering still moves between these points: the runs are too short to answer which variant "
                "is better; read the differences above as provisional.")
    return "\n".join(lines) + "\n\n" + note


def _band(curves: list[list[tuple[float, float]]]) -> tuple[list[float], list[float], list[float]]:
    """Mean x, mean y and the 95% CI half-width of y at each shared position (runs share their
    evaluation steps); the half-width is 0 for one run."""
    length = min(len(c) for c in curves)
    xs = [statistics.fmean([c[i][0] for c in curves]) for i in range(length)]
    cis = [mean_ci([c[i][1] for c in curves]) for i in range(length)]
    return xs, [ci.mean for ci in cis], [0.0 if ci.n < 2 else ci.half for ci in cis]


def plot_curves(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Three PNGs in bits/byte: A vs tokens and vs wall time (phase A), and A and B through phase
    B. Lines are means over seeds, bands their 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    names = _names(results)
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    runs_of = {n: [r for r in results["runs"] if r["variant"] == n] for n in names}
    written = []

    def draw(ax, name: str, curves) -> None:
        xs, ys, half = _band(curves)
        ax.plot(xs, ys, color=colors[name], linewidth=2, label=name)
        ax.fill_between(xs, [y - h for y, h in zip(ys, half)], [y + h for y, h in zip(ys, half)],
                        color=colors[name], alpha=0.2, linewidth=0)

    def save(fig, name: str) -> None:
        fig.tight_layout()
        written.append(save_figure_atomic(fig, out_dir / name, dpi=120))

    for x_index, x_label, file_name in ((0, "training tokens", "val_loss_vs_tokens.png"),
                                        (1, "wall time (s)", "val_loss_vs_time.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name in names:
            draw(ax, name, [[(p[x_index], p[2]) for p in _curve_bpb(r)] for r in runs_of[name]])
        after_start = [_curve_bpb(r)[1][2] for r in results["runs"] if len(r["probe"]["curve_phase_a"]) > 1]
        if after_start:  # the step-0 loss (~log2 vocab per token) would flatten the part worth seeing
            ax.set_ylim(top=max(after_start) * 1.02)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"bits/byte on A ({results['settings']['task_a']})")
        ax.set_title("Phase A training (mean over seeds, 95% CI band)")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, file_name)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, title in ((axes[0], "loss_A", "A (forgetting)"), (axes[1], "loss_B", "B (learning)")):
        for name in names:
            curves = []
            for r in runs_of[name]:
                factors = r["probe"].get("bits_per_nat", [factor_a(r), math.nan])
                factor = factors[0] if key == "loss_A" else factors[1]
                curves.append([(p["step"], p[key] * factor) for p in r["probe"]["curve_phase_b"]])
            draw(ax, name, curves)
        ax.set_xlabel("phase B step")
        ax.set_ylabel("bits/byte")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Phase B: training on {results['settings']['task_b']} after {results['settings']['task_a']}")
    save(fig, "forgetting_phase_b.png")
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, Interval):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def report_text(results: dict[str, Any]) -> str:
    """results.md: settings, the table, paired differences with sentences, and the ordering."""
    rows = summarize(results)
    settings = results["settings"]
    text = (
        f"# FFN comparison\n\n"
        f"Command: `{results['command']}`\n\n"
        f"Task A `{settings['task_a']}` for {settings['steps_a']} steps, then task B `{settings['task_b']}` for "
        f"{settings['steps_b']} steps; {settings['tokens_per_step']:,} tokens/step; seeds {settings['seeds']}. "
        "Bits per byte on fixed validation windows (nats/token / ln 2 x tokens per byte); mean ± 95% CI half-width "
        "over seeds (t distribution). Forgetting = A's bits/byte after B - after A; max forgetting = its peak "
        "during B; plasticity = drop of B's bits/byte during B.\n\n" + markdown_table(rows) + "\n"
    )
    differences = paired_differences(results)
    if differences:
        text += (f"\nDifferences from {differences[0]['reference']}, paired by seed (mean and 95% CI; negative "
                 "bits/byte and negative forgetting are better):\n\n" + differences_table(differences) + "\n\n")
        text += "\n".join(f"- {line}" for line in verdicts(differences)) + "\n"
    text += locality_text(results)
    text += "\n## Ordering during phase A\n\n" + ordering_text(ordering(results)) + "\n"
    return text


def locality_text(results: dict[str, Any]) -> str:
    """The KAN locality section of results.md: kan-nobase (no SiLU base branch) and kan-frozenbase
    (base frozen during B, same phase A as kan) paired against kan; empty without them."""
    rows = paired_differences(results, reference=LOCALITY_REFERENCE, variants=LOCALITY_VARIANTS)
    if not rows:
        return ""
    questions = (QUESTIONS[1], ("bits_per_byte", "Q1 (quality)", "bits/byte on A after phase A"))
    shared = shares_phase_a(results)  # same phase A as kan: no quality difference to state
    lines = verdicts([r for r in rows if r["variant"] not in shared], questions) + \
        verdicts([r for r in rows if r["variant"] in shared], questions[:1])
    return ("\n## KAN locality: variants paired against kan\n\n"
            "If splines forget less because each changes only near its own inputs, removing the global SiLU base "
            "(kan-nobase) or freezing it during B (kan-frozenbase) should lower forgetting.\n\n"
            + differences_table(rows) + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")


def write_report(results: dict[str, Any], out_dir: str | Path, extra_markdown: str = "") -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` (plus ``extra_markdown``) and the plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"summary": summarize(results), "differences": paired_differences(results), "ordering": ordering(results),
               "locality": paired_differences(results, reference=LOCALITY_REFERENCE, variants=LOCALITY_VARIANTS)}
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    write_json_atomic(paths["json"], _jsonable(results | summary))
    write_text_atomic(paths["markdown"], report_text(results) + extra_markdown)
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
    for key in ("summary", "differences", "ordering", "locality"):
        results.pop(key, None)
    for name, written in write_report(results, argv[0]).items():
        print(f"{name}: {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
