"""The tokenizer files of an export, for whichever tokenizer the checkpoint was trained with.

``gpt2``: GPT-2's own BPE files (``tokenizer_files.py``). ``bytes``: a ``tokenizers`` byte-level
BPE with the 256 byte symbols and no merges, so every UTF-8 byte is one token whose id is the
byte's value, exactly as ``quadgpt.tokenizer.ByteTokenizer``; ``<|endoftext|>`` is id 256.
Both load with ``AutoTokenizer.from_pretrained(folder)`` offline. The export's
``tokenizer_config.json`` names the quadgpt tokenizer (``quadgpt_tokenizer``) so that
``quadgpt eval ppl`` on an export counts bytes the same way as on the checkpoint.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..tokenizer import EOT_TEXT, get_tokenizer
from .tokenizer_files import write_gpt2_tokenizer

TOKENIZER_CONFIG = "tokenizer_config.json"
NAME_KEY = "quadgpt_tokenizer"


@functools.lru_cache(maxsize=1)
def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in character of each byte 0-255 (what byte-level BPE vocabularies
    hold): printable Latin-1 bytes stand for themselves, the rest map to U+0100 upwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_byte_tokenizer(folder: Path, model_max_length: int) -> None:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` of the byte tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: b for b, symbol in enumerate(byte_symbols())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # no regex split, no prefix space: the text's bytes in order, one token each
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(EOT_TEXT, special=True, normalized=False)])
    eot_id = get_tokenizer("bytes").eot_id
    if backend.token_to_id(EOT_TEXT) != eot_id:  # the ids must be quadgpt's, or the model reads garbage
        raise RuntimeError(f"the byte tokenizer's {EOT_TEXT} got id {backend.token_to_id(EOT_TEXT)}, not {eot_id}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=EOT_TEXT, eos_token=EOT_TEXT, unk_token=EOT_TEXT,
        model_max_length=model_max_length, clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(folder))


def write_tokenizer(folder: Path, tokenizer_name: str, model_max_length: int) -> None:
    """The files ``AutoTokenizer`` needs for ``tokenizer_name``, plus its name in tokenizer_config.json."""
    writers = {"gpt2": write_gpt2_tokenizer, "bytes": write_byte_tokenizer}
    if tokenizer_name not in writers:
        raise ValueError(f"No Hugging Face tokenizer files for the '{tokenizer_name}' tokenizer; known: {', '.join(writers)}.")
    writers[tokenizer_name](folder, model_max_length)
    path = folder / TOKENIZER_CONFIG
    config = json.loads(path.read_text())
    config[NAME_KEY] = tokenizer_name
    path.write_text(json.dumps(config, indent=2) + "\n")


def exported_tokenizer_name(folder: str | Path) -> str:
    """The quadgpt tokenizer an export folder was written with (exports without the record: gpt2)."""
    path = Path(folder) / TOKENIZER_CONFIG
    if not path.is_file():
        return "gpt2"
    return json.loads(path.read_text()).get(NAME_KEY, "gpt2")
