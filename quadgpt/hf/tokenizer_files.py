"""The GPT-2 tokenizer files of an export, taken from tiktoken's cache (no network needed).

tiktoken's ``gpt2`` encoding is built from exactly the two files of OpenAI's GPT-2 release that
``transformers`` calls ``vocab.json`` (tiktoken: ``encoder.json``) and ``merges.txt`` (``vocab.bpe``).
tiktoken caches each under the SHA-1 of its URL in ``TIKTOKEN_CACHE_DIR`` (else
``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``); ``tiktoken.load.read_file_cached`` finds
them there, checks their SHA-256, and downloads them only when they are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..tokenizer import EOT_TOKEN, TokenizerUnavailable

_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
# file in the export -> (tiktoken's URL, SHA-256 tiktoken checks it against)
GPT2_FILES = {
    "vocab.json": (_BASE_URL + "encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "merges.txt": (_BASE_URL + "vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}
EOT_TEXT = "<|endoftext|>"


def gpt2_file_bytes(name: str) -> bytes:
    """Contents of ``vocab.json`` or ``merges.txt`` from tiktoken's cache (downloaded if absent)."""
    from tiktoken.load import read_file_cached

    url, sha256 = GPT2_FILES[name]
    try:
        return read_file_cached(url, sha256)
    except Exception as err:  # network errors come in many types
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or "<tmp>/data-gym-cache"
        raise TokenizerUnavailable(
            f"GPT-2 tokenizer file '{name}' ({url}) is not in tiktoken's cache ({cache}) and could not be "
            f"downloaded ({type(err).__name__}: {err}). Run once with internet access "
            "(python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\"), or set TIKTOKEN_CACHE_DIR to "
            "a folder holding tiktoken's cached GPT-2 files."
        ) from err


def write_gpt2_tokenizer(folder: Path, model_max_length: int) -> None:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``:
    what ``AutoTokenizer.from_pretrained(folder)`` needs for GPT-2's BPE."""
    for name in GPT2_FILES:
        (folder / name).write_bytes(gpt2_file_bytes(name))
    special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "add_bos_token": False,
        "added_tokens_decoder": {
            str(EOT_TOKEN): {
                "content": EOT_TEXT,
                "lstrip": False,
                "normalized": True,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
        },
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
