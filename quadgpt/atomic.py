"""Writing files and folders whole or not at all: write a temporary sibling, then rename it.

A rename within one folder is atomic on POSIX file systems, so a reader, a resumed run or a
crash at any moment sees either the old complete file (or folder) or the new complete one,
never half of either. Everything quadgpt writes that something later trusts goes through here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def tmp_sibling(final: str | Path) -> Path:
    """The hidden temporary name ``final`` is written under before its rename."""
    final = Path(final)
    return final.parent / f"{TMP_PREFIX}{final.name}"


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


FIGURE_MARK = "quadgpt"  # the PNG "Software" / PDF and SVG "Creator" that marks a figure as ours
_MARKS = (b"Software\x00quadgpt", b"(quadgpt)", b"<dc:title>quadgpt", b">quadgpt<")


def is_quadgpt_figure(path: str | Path) -> bool:
    """Whether ``path`` is a figure that ``save_figure_atomic`` wrote: PNG text chunks precede the
    image; a PDF's Info dictionary and an SVG's metadata sit in its first few kilobytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    return any(mark in head for mark in _MARKS)


def save_figure_atomic(fig, path: str | Path, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically, in the format its suffix names (.png, .pdf, .svg, ...),
    marked as quadgpt's (``is_quadgpt_figure``), and close it. The temporary name hides the
    suffix, so the format is passed explicitly."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    marker = {"png": {"Software": FIGURE_MARK}, "pdf": {"Creator": FIGURE_MARK}, "svg": {"Creator": FIGURE_MARK}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_sibling(path)
        fig.savefig(tmp, format=fmt, metadata=marker.get(fmt), **savefig_kwargs)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path


def prepare_tmp_folder(final: str | Path) -> Path:
    """Create a fresh, empty temporary folder for ``final`` (removing one a crash left behind)."""
    tmp = tmp_sibling(final)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _fsync_tree(folder: Path) -> None:
    for item in folder.iterdir():
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())


def commit_tmp_folder(final: str | Path) -> Path:
    """Make the complete temporary folder of ``final`` visible under its real name.

    An existing ``final`` is first renamed aside and removed only after the new one is in
    place, so at every moment one complete folder exists under ``final`` or its old copy.
    """
    final = Path(final)
    tmp = tmp_sibling(final)
    _fsync_tree(tmp)
    old = final.parent / f"{TMP_PREFIX}old-{final.name}"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final
