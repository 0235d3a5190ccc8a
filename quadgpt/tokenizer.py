"""Tokenizers by name: GPT-2 BPE (``gpt2``, the default) and raw UTF-8 bytes (``bytes``).

Every tokenizer is an object with the same small interface (``Tokenizer``): ``encode`` (text ->
ids, special tokens in the text treated as plain text), ``decode`` (ids -> text),
``token_bytes`` (one id -> the bytes it stands for; end-of-text shows as ``<|endoftext|>``, though
it is no text and counts no bytes in bits per byte), ``eot_id`` (the
id that separates documents in the token shards) and ``n_vocab``. ``get_tokenizer(name)`` is
the only way code obtains one, so adding a tokenizer is one class and one registry line.

A model's embedding table may be larger than ``n_vocab`` (padded to a multiple of 64 for speed,
``padded_vocab_size``); ids at and above ``n_vocab`` never occur in the data.
"""

from __future__ import annotations

import functools
import os
from typing import Protocol

import numpy as np

EOT_TOKEN = 50256  # GPT-2's <|endoftext|>
GPT2_VOCAB_SIZE = 50257
BYTES_EOT = 256  # the byte tokenizer's end-of-text: the first id after the 256 byte values
EOT_TEXT = "<|endoftext|>"  # how end-of-text is written when decoded (the same for every tokenizer)
DEFAULT_TOKENIZER = "gpt2"


class TokenizerUnavailable(RuntimeError):
    pass


class Tokenizer(Protocol):
    name: str
    n_vocab: int  # ids 0 .. n_vocab - 1
    eot_id: int  # document separator

    def encode(self, text: str) -> list[int]: ...

    def encode_to_numpy(self, text: str) -> np.ndarray: ...

    def decode(self, ids) -> str: ...

    def token_bytes(self, token: int) -> bytes: ...


class GPT2Tokenizer:
    """GPT-2's BPE through tiktoken (50,257 ids; EOT = 50256); the files are loaded on first use."""

    name = "gpt2"
    n_vocab = GPT2_VOCAB_SIZE
    eot_id = EOT_TOKEN

    @functools.cached_property
    def encoding(self):
        import tiktoken

        try:
            return tiktoken.get_encoding(self.name)
        except ValueError:
            raise  # unknown encoding name: tiktoken's own message lists the known ones
        except Exception as err:  # network errors come in many types (requests, urllib, ssl)
            cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
            raise TokenizerUnavailable(
                f"Could not load the '{self.name}' BPE files ({type(err).__name__}: {err}). tiktoken downloads "
                "them once on first use and caches them, which needs the internet that one time. On a "
                "machine without it, set TIKTOKEN_CACHE_DIR to a folder already holding tiktoken's cached "
                f"GPT-2 files (vocab.bpe and encoder.json, named by the SHA-1 of their URLs); it is now {cache}."
            ) from err

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_to_numpy(self, text: str) -> np.ndarray:
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids) -> str:
        return self.encoding.decode([int(i) for i in ids])

    def token_bytes(self, token: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token)  # 50256 is "<|endoftext|>" in the BPE


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255, plus end-of-text = 256 (257 ids). Any text round-trips exactly;
    ``decode`` of a cut-off multi-byte character gives U+FFFD, as ``bytes.decode(errors="replace")``."""

    name = "bytes"
    n_vocab = 257
    eot_id = BYTES_EOT

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_to_numpy(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def decode(self, ids) -> str:
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        if token == self.eot_id:
            return EOT_TEXT.encode()
        if not 0 <= token < 256:
            raise ValueError(f"Token id {token} is not a byte (0-255) nor the byte tokenizer's end-of-text (256).")
        return bytes((token,))


TOKENIZERS: dict[str, type] = {"gpt2": GPT2Tokenizer, "bytes": ByteTokenizer}


@functools.lru_cache(maxsize=None)
def get_tokenizer(name: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """The tokenizer called ``name`` (see ``TOKENIZERS``); ValueError naming the known ones otherwise.

    Raises TokenizerUnavailable when a BPE's files cannot be had offline (on first use).
    """
    if name not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer '{name}'. Known: {', '.join(TOKENIZERS)}.")
    tokenizer = TOKENIZERS[name]()
    if name == "gpt2":
        tokenizer.encoding  # fail here, with the offline message, rather than mid-run
    return tokenizer


def padded_vocab_size(n_vocab: int, multiple: int = 64) -> int:
    """``n_vocab`` rounded up to a multiple of ``multiple`` (GPT-2: 50257 -> 50304; bytes: 257 -> 320)."""
    return -(-n_vocab // multiple) * multiple


def encode(text: str, name: str = DEFAULT_TOKENIZER) -> list[int]:
    """Token ids of ``text`` (special tokens are treated as plain text)."""
    return get_tokenizer(name).encode(text)


def decode(ids, name: str = DEFAULT_TOKENIZER) -> str:
    return get_tokenizer(name).decode(ids)


def tokenizer_vocab_size(name: str = DEFAULT_TOKENIZER) -> int:
    """How many ids tokenizer ``name`` can decode (GPT-2: 50,257; bytes: 257), known without its files."""
    if name not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer '{name}'. Known: {', '.join(TOKENIZERS)}.")
    return TOKENIZERS[name].n_vocab
