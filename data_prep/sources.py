"""Where documents come from: the built-in stdlib corpus, local files, or a Hugging Face dataset.

``open_source`` turns a source string into a ``Corpus``: a content hash (decides whether a
re-run is a no-op), a description for ``meta.json``, and the documents as ``(domain, text)``
pairs. ``datasets`` is imported only for the local-file and hub sources.
"""

from __future__ import annotations

import ast
import functools
import glob
import hashlib
import inspect
import json
import os
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

BUILTIN_DOMAINS = {
    "builtin:stdlib": ("code", "prose"),
    "builtin:stdlib-code": ("code",),
    "builtin:stdlib-prose": ("prose",),
}
# Local file kinds, by extension, and the `datasets` builder that reads them.
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_KINDS = {".txt", ".jsonl", ".json", ".csv"}  # read as text: checked for UTF-8
# Stdlib folders that are not the library proper: test suites and installed third-party packages.
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
MIN_DOCSTRING_WORDS = 8  # shorter docstrings ("Return x.") are labels, not prose


class SourceError(ValueError):
    """A source that cannot be read as asked; the message names it and the fix."""


@dataclass
class Corpus:
    """Documents of one source, with what ``meta.json`` records about them."""

    description: str
    content_hash: str
    domains: tuple[str, ...]
    documents: Iterable[tuple[int, str]]  # (index into domains, text); re-iterable unless streaming
    num_documents: int | None  # None when streaming (unknown until the end)
    notes: list[str] = field(default_factory=list)  # e.g. how many files had invalid UTF-8


def _sha256_texts(items: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for text in items:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# builtin:stdlib — the Python standard library as code and prose
# --------------------------------------------------------------------------------------


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The stdlib's own ``.py`` files, sorted (tests and site-packages left out)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    return sorted(
        path
        for path in root.rglob("*.py")
        if not STDLIB_SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]) and not path.name.startswith("test_")
    )


def module_texts(path: Path, prose: bool = True) -> tuple[str, str, bool]:
    """(source code, its docstrings joined as prose, whether the bytes were valid UTF-8) of one file.

    Top-level so that a process pool can run it; docstrings of long enough length only, and
    none (no parsing) when ``prose`` is False.
    """
    raw = path.read_bytes()
    try:
        code, clean = raw.decode("utf-8"), True
    except UnicodeDecodeError:
        code, clean = raw.decode("utf-8", "replace"), False
    if not prose:
        return code, "", clean
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a stdlib file for another Python version (e.g. lib2to3 fixtures)
        return code, "", clean
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc.split()) >= MIN_DOCSTRING_WORDS:
                docs.append(doc)
    return code, "\n\n".join(docs), clean


def open_builtin(spec: str, map_fn: Callable = map, progress: bool = False) -> Corpus:
    """The stdlib of the running interpreter: one code document per module, one prose document per
    module (its docstrings) plus one per ``pydoc_data.topics`` entry. Deterministic: sorted paths."""
    if spec not in BUILTIN_DOMAINS:
        raise SourceError(f"Unknown built-in corpus '{spec}'. Known: {', '.join(BUILTIN_DOMAINS)}.")
    domains = BUILTIN_DOMAINS[spec]
    files = stdlib_files()
    code_docs, prose_docs, not_utf8 = [], [], 0
    read = functools.partial(module_texts, prose="prose" in domains)
    texts = tqdm(map_fn(read, files), total=len(files), desc="reading stdlib", unit="file", disable=not progress)
    for code, prose, clean in texts:
        not_utf8 += not clean
        if code.strip():
            code_docs.append(code)
        if prose:
            prose_docs.append(prose)
    if "prose" in domains:
        from pydoc_data.topics import topics

        prose_docs += [inspect.cleandoc(topics[key]) for key in sorted(topics)]
    documents = [(0, text) for text in code_docs] if "code" in domains else []
    prose_index = domains.index("prose") if "prose" in domains else None
    if prose_index is not None:
        documents += [(prose_index, text) for text in prose_docs]
    version = sysconfig.get_python_version()
    notes = [f"{not_utf8} stdlib file(s) were not valid UTF-8: invalid bytes replaced"] if not_utf8 else []
    return Corpus(
        description=f"{spec}: Python {version} standard library ({', '.join(domains)}), {len(files)} modules",
        content_hash=_sha256_texts(f"{d}\0{t}" for d, t in documents),
        domains=domains,
        documents=documents,
        num_documents=len(documents),
        notes=notes,
    )


# --------------------------------------------------------------------------------------
# Local files: a file, a folder (recursive) or a glob, read through `datasets`
# --------------------------------------------------------------------------------------


def _files_under(folder: Path) -> list[Path]:
    """Every file under ``folder``, recursively, following symlinked folders (``Path.rglob`` does
    not), hidden names left out (``.tmp-*`` leftovers, ``.git``)."""
    pattern = os.path.join(glob.escape(str(folder)), "**", "*")
    return [Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]


def local_files(spec: str) -> list[Path]:
    """The supported files named by ``spec``: a file, a folder searched recursively, or a glob (whose
    matching folders are searched too). Raises ``SourceError`` naming what is wrong."""
    path = Path(spec).expanduser()
    if path.is_file():
        found = [path]
    elif path.is_dir():
        found = _files_under(path)
    elif glob.has_magic(spec):
        matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
        found = [p for m in matches for p in (_files_under(m) if m.is_dir() else [m])]
        if not found:
            raise SourceError(f"The pattern '{spec}' matches no files.")
    else:
        raise SourceError(
            f"Source '{spec}' does not exist. Give a file, a folder, a glob, 'builtin:stdlib' "
            "(or builtin:stdlib-code / builtin:stdlib-prose) or 'hf:NAME'."
        )
    files = sorted(p for p in found if p.suffix.lower() in BUILDERS)
    if not files:
        raise SourceError(f"'{spec}' holds no readable files; supported: {', '.join(BUILDERS)}.")
    kinds = sorted({BUILDERS[p.suffix.lower()] for p in files})
    if len(kinds) > 1:
        raise SourceError(
            f"'{spec}' mixes file kinds ({', '.join(kinds)}); prepare one kind per folder "
            f"or pass a glob such as '{spec}/**/*.txt'."
        )
    return files


def source_inputs(spec: str, files: list[Path] | None) -> list[Path]:
    """The paths a source reads, for ``quadgpt.safety.check_output_path``: a local source's folder
    (a glob's folder before its first wildcard) and each of its ``files``; a local ``hf:`` folder;
    the stdlib folder of a built-in corpus."""
    if spec.startswith("builtin:"):
        return [Path(sysconfig.get_paths()["stdlib"])]
    if spec.startswith("hf:"):
        return [Path(spec[3:]).expanduser()] if Path(spec[3:]).expanduser().exists() else []
    path = Path(spec).expanduser()
    if not path.exists():  # a glob: the folder part before the first wildcard
        parts = path.parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        path = Path(*parts[:fixed]) if fixed else Path(".")
    return [path, *(files or [])]


def _utf8_files(files: list[Path], scratch: Path) -> tuple[list[Path], int, str]:
    """Files to load (non-UTF-8 text files replaced by repaired copies in ``scratch``), how many
    needed repair, and the SHA-256 of the original bytes (the source's content hash)."""
    digest, out, repaired = hashlib.sha256(), [], 0
    for index, path in enumerate(files):
        raw = path.read_bytes()
        digest.update(str(path.name).encode() + len(raw).to_bytes(8, "little") + raw)
        if path.suffix.lower() in TEXT_KINDS:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                repaired += 1
                scratch.mkdir(parents=True, exist_ok=True)
                path = scratch / f"{index:06d}{path.suffix.lower()}"
                path.write_text(raw.decode("utf-8", "replace"), encoding="utf-8")
        out.append(path)
    return out, repaired, digest.hexdigest()


class TextColumn:
    """The ``(0, text)`` documents of one column of a ``datasets`` dataset, re-iterable: prepare
    reads a materialised corpus twice (to place the val split, then to tokenise)."""

    def __init__(self, dataset: Any, text_field: str, where: str) -> None:
        columns = dataset.column_names
        if columns is None:  # a streaming dataset whose schema is known only once read
            first = next(iter(dataset), None)
            columns = list(first) if first is not None else []
        if text_field not in columns:
            raise SourceError(
                f"{where} has no field '{text_field}'. Its fields: {', '.join(map(str, columns)) or '(none)'}. "
                "Pass --text-field NAME."
            )
        self.dataset, self.text_field = dataset.select_columns([text_field]), text_field

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return ((0, row[self.text_field]) for row in self.dataset)


def open_local(spec: str, scratch: Path, *, text_field: str = "text", line_docs: bool = False) -> Corpus:
    """Local files through ``datasets``; ``.txt`` gives one document per file unless ``line_docs``.
    Raises ``SourceError`` for files their parser rejects."""
    from datasets import load_dataset
    from datasets.utils import logging as datasets_logging

    files = local_files(spec)
    builder = BUILDERS[files[0].suffix.lower()]
    loadable, repaired, content_hash = _utf8_files(files, scratch / "utf8")
    kwargs: dict[str, Any] = {}
    if builder == "text":
        kwargs = {"sample_by": "line" if line_docs else "document"}
    elif builder == "csv":  # pandas reads NA, null, None, nan, N/A... as missing: here they are text
        kwargs = {"keep_default_na": False, "converters": {text_field: str}}
    verbosity = datasets_logging.get_verbosity()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)  # its parser errors come back as one SourceError
    try:
        dataset = load_dataset(
            builder, data_files=[str(p) for p in loadable], split="train", cache_dir=str(scratch / "hf_cache"), **kwargs
        )
    except Exception as err:  # noqa: BLE001 - datasets wraps parser errors (pyarrow, pandas) in its own types
        cause = err
        while cause.__cause__ is not None:  # the parser's own message says which line is bad
            cause = cause.__cause__
        first_line = (str(cause).strip().splitlines() or [""])[0]
        raise SourceError(f"Cannot read '{spec}' as {builder} files: {type(cause).__name__}: {first_line}") from err
    finally:
        datasets_logging.set_verbosity(verbosity)
    if builder == "text":
        text_field = "text"
    documents = TextColumn(dataset, text_field, f"'{spec}'")
    notes = [f"{repaired} of {len(files)} file(s) were not valid UTF-8: invalid bytes replaced"] if repaired else []
    return Corpus(
        description=f"local {builder} files '{spec}' ({len(files)} files)",
        content_hash=content_hash,
        domains=("text",),
        documents=documents,
        num_documents=len(dataset),
        notes=notes,
    )


# --------------------------------------------------------------------------------------
# hf:NAME — a Hugging Face hub dataset (or a local dataset folder loaded by path)
# --------------------------------------------------------------------------------------


def open_hf(
    name: str, *, subset: str | None, split: str, text_field: str, streaming: bool, cache_dir: Path | None = None
) -> Corpus:
    """``datasets.load_dataset(name, subset, split=split, streaming=...)``.

    The content hash is the dataset's fingerprint (a hash of its data files) when it is
    materialised; a stream cannot be hashed before it is read, so a streamed source is
    identified by name, subset and split alone.
    """
    from datasets import load_dataset

    if not name:
        raise SourceError("hf: needs a dataset name, e.g. hf:roneneldan/TinyStories.")
    try:
        dataset = load_dataset(
            name, subset, split=split, streaming=streaming, cache_dir=str(cache_dir) if cache_dir else None
        )
    except (OSError, ValueError) as err:  # not found, unreachable hub (ConnectionError), bad subset/split
        raise SourceError(
            f"Cannot load Hugging Face dataset '{name}' (subset={subset}, split={split}): {err}. Offline, a dataset "
            "loads only from the local cache (set HF_DATASETS_OFFLINE=1) or from a local path (hf:/path/to/folder)."
        ) from err
    documents = TextColumn(dataset, text_field, f"Dataset '{name}' (split {split})")
    identity = {"name": name, "subset": subset, "split": split}
    if streaming:
        content_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    else:
        content_hash = hashlib.sha256(dataset._fingerprint.encode()).hexdigest()
    return Corpus(
        description=f"hf:{name} subset={subset} split={split}" + (" (streamed)" if streaming else ""),
        content_hash=content_hash,
        domains=("text",),
        documents=documents,
        num_documents=None if streaming else len(dataset),
    )
