"""GPT-2 BPE through tiktoken. EOT (id 50256) separates documents in the token shards."""

from __future__ import annotations

import functools
import os

import tiktoken

EOT_TOKEN = 50256
GPT2_VOCAB_SIZE = 50257


class TokenizerUnavailable(RuntimeError):
    pass


@functools.lru_cache(maxsize=None)
def get_tokenizer(name: str = "gpt2") -> tiktoken.Encoding:
    """The tiktoken encoding ``name``; a clear error when its files cannot be had offline."""
    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        raise  # unknown encoding name: tiktoken's own message lists the known ones
    except Exception as err:  # network errors come in many types (requests, urllib, ssl)
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
        raise TokenizerUnavailable(
            f"Could not load the '{name}' BPE files ({type(err).__name__}: {err}). tiktoken downloads "
            "them once on first use and caches them, which needs the internet that one time. On a "
            "machine without it, set TIKTOKEN_CACHE_DIR to a folder already holding tiktoken's cached "
            f"GPT-2 files (vocab.bpe and encoder.json, named by the SHA-1 of their URLs); it is now {cache}."
        ) from err


def encode(text: str, name: str = "gpt2") -> list[int]:
    """Token ids of ``text`` (special tokens are treated as plain text)."""
    return get_tokenizer(name).encode_ordinary(text)


def decode(ids, name: str = "gpt2") -> str:
    return get_tokenizer(name).decode(list(ids))


def tokenizer_vocab_size(name: str = "gpt2") -> int:
    """How many ids tokenizer ``name`` can decode (GPT-2: 50,257), known without its files."""
    if name == "gpt2":
        return GPT2_VOCAB_SIZE
    return get_tokenizer(name).n_vocab
