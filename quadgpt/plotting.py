"""``quadgpt plot RUN... --out F.png|F.pdf|F.svg``: train and validation loss against tokens seen, one colour
per run, so that runs of different FFN kinds (or seeds) can be compared on one figure.

Tokens, not steps, on the x axis: runs with different batch sizes stay comparable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .atomic import is_quadgpt_figure, save_figure_atomic
from .logging_utils import METRICS_FILE, read_metrics
from .safety import UnsafeOutput, check_output_path, free_sibling


def check_figure_path(out: str | Path) -> None:
    """Raise ValueError unless matplotlib can write the format ``out``'s suffix names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = Path(out).suffix.lstrip(".").lower()
    if suffix not in formats:
        raise ValueError(f"--out '{out}': the file name must end in one of .{', .'.join(sorted(formats))} "
                         "(the suffix picks the format), e.g. loss.png.")


def plot_runs(run_dirs: list[str | Path], out: str | Path, x: str = "tokens", title: str | None = None,
              val_key: str = "val_loss") -> Path:
    """Draw every run's training loss (thin line) and ``val_key`` (markers) into ``out``, in the
    format its suffix names (PNG, PDF, SVG, ...).

    Raises (before reading anything) ValueError for a suffix matplotlib cannot write, and
    ``UnsafeOutput`` when ``out`` is or holds a run's metrics file or is an existing file that is
    not a quadgpt figure; FileNotFoundError for a run without metrics, OSError when ``out``
    cannot be written."""
    check_plot_out(run_dirs, out)
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(run_dirs):
        records = read_metrics(run)
        colour = colours[i % len(colours)]
        label = Path(run).name
        train = [(r[x], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
        val = [(r[x], r[val_key]) for r in records if r.get("kind") == "eval" and val_key in r]
        if not train and not val:
            raise ValueError(f"Run '{run}' has no '{val_key}' or training loss records in its metrics.jsonl.")
        if train:
            ax.plot(*zip(*train), color=colour, alpha=0.35, linewidth=1, label=f"{label} train")
        if val:
            ax.plot(*zip(*val), color=colour, marker="o", markersize=3, linewidth=1.5, label=f"{label} {val_key}")
    ax.set_xlabel("tokens seen" if x == "tokens" else "optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure_atomic(fig, out, dpi=120, bbox_inches="tight")


def check_plot_out(run_dirs: list[str | Path], out: str | Path) -> None:
    """The rules of ``plot_runs``' output: a figure format, overwriting neither an input nor a
    file quadgpt did not write."""
    out = Path(out)
    check_figure_path(out)
    check_output_path(out, [Path(run) / METRICS_FILE for run in run_dirs], suffix="plot")
    if out.exists() and not is_quadgpt_figure(out):
        raise UnsafeOutput(f"--out '{out}' exists and is not a plot quadgpt wrote; choose another, e.g. "
                           f"{free_sibling(out, 'plot').with_suffix(out.suffix)}")


def main(argv: list[str] | None = None) -> int:
    """Plot train/val loss of one or more runs (train.out_dir folders) into one figure (PNG, PDF, SVG, ...)."""
    parser = argparse.ArgumentParser(prog="quadgpt plot", description=main.__doc__)
    parser.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    parser.add_argument("--out", required=True, help="figure to write; its suffix picks the format (.png, .pdf, .svg)")
    parser.add_argument("--x", choices=("tokens", "step"), default="tokens", help="x axis (default: tokens)")
    parser.add_argument("--val-key", default="val_loss", help="eval record to plot, e.g. val_loss/<name> of data.extra_val")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path = plot_runs(args.runs, args.out, x=args.x, title=args.title, val_key=args.val_key)
    except (FileNotFoundError, ValueError) as err:
        print(f"quadgpt plot: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the runs were fine; the figure could not be written
        print(f"quadgpt plot: error: could not write '{args.out}': {err.strerror or err}.", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
