"""Where a command may write: never onto, around or into what it reads, and replace only what
quadgpt itself wrote.

Every command that writes a folder or file checks its output with these two rules before it
creates anything:

- ``check_output_path``: the output is not, does not contain and does not lie inside any of the
  command's inputs (symlinks resolved), so no write, rename or removal can touch an input;
- ``existing_output``: an existing output is replaced only when quadgpt wrote it, as told by its
  metadata (a prepared dataset's ``meta.json``, a checkpoint's ``meta.json``, an export's
  ``config.json``); anything else is refused, whatever ``--force`` says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path


class UnsafeOutput(ValueError):
    """An output that would overwrite, delete or write into something quadgpt did not make."""


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def free_sibling(path: str | Path, suffix: str) -> Path:
    """A path beside ``path`` named ``<stem>-<suffix>`` (``-2``, ``-3``... if taken) that does not exist
    yet: an output folder a hint can name knowing that it would work."""
    path = Path(path)
    base = path.parent / f"{path.stem if path.is_file() else path.name}-{suffix}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def check_output_path(out: str | Path, inputs: Iterable[str | Path | None], what: str = "--out",
                      suffix: str = "out") -> None:
    """Refuse ``out`` if it is, contains or lies inside one of ``inputs`` (None/empty are skipped).

    Paths are compared after resolving symlinks, so a link to a source counts as the source.
    Raises ``UnsafeOutput`` naming the input and a free sibling folder of it (``free_sibling``
    with ``suffix``) that would work instead.
    """
    target = _resolved(out)
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = _resolved(item)
        if target == source:
            relation = "is"
        elif target in source.parents:
            relation = "contains"
        elif source in target.parents:
            relation = "lies inside"
        else:
            continue
        raise UnsafeOutput(
            f"{what} '{out}' {relation} the input '{item}'; writing there could overwrite or delete it. "
            f"Choose an output outside it, e.g. {what} {free_sibling(source, suffix)}"
        )


def existing_output(out: str | Path, is_ours: Callable[[Path], bool], made_by: str, what: str = "--out") -> bool:
    """Whether ``out`` is an existing, non-empty folder that quadgpt wrote (so it may be reused or
    replaced). False when ``out`` is absent or an empty folder.

    Raises ``UnsafeOutput`` when ``out`` is a file, or a non-empty folder that ``is_ours`` does not
    recognise as written by ``made_by`` (e.g. ``quadgpt prepare``): no option replaces those.
    """
    out = Path(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise UnsafeOutput(f"{what} '{out}' is a file, not a folder; choose another {what}, "
                           f"e.g. {free_sibling(out, 'out')}")
    if not any(out.iterdir()):
        return False
    if not is_ours(out):
        raise UnsafeOutput(
            f"{what} '{out}' holds files that {made_by} did not write; quadgpt never replaces those. "
            f"Choose a new or empty folder, e.g. {free_sibling(out, 'out')}"
        )
    return True
