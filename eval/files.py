"""Result files are written whole or not at all: a temporary sibling, then a rename.

A comparison may be killed at any moment and resumed later; a reader (or the resume logic, which
trusts ``summary.json`` / ``result.json`` to mean "finished") must never see half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through ``.<name>.tmp`` and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON, atomically (see ``write_text_atomic``)."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")
