"""Shared test set-up: offline GPT-2 BPE, deterministic seeds, and the `gpu` marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
_SHARED_CACHE = REPO_ROOT.parent / "shared" / "tiktoken_cache"
if _SHARED_CACHE.is_dir() and not os.environ.get("TIKTOKEN_CACHE_DIR"):
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED_CACHE)

# Two cores shared by pytest-xdist workers: one intra-op thread each keeps them from fighting.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
