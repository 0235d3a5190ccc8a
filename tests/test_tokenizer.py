import pytest
import tiktoken

from quadgpt import tokenizer
from quadgpt.tokenizer import EOT_TOKEN, TokenizerUnavailable, decode, encode, get_tokenizer


def test_round_trip_and_eot():
    text = 'def f(x):\n    return x ** 2  # "quadratic" — ünïcode ok\n'
    ids = encode(text)
    assert decode(ids) == text
    assert get_tokenizer().eot_id == EOT_TOKEN == 50256
    assert get_tokenizer().n_vocab == 50257
    assert EOT_TOKEN not in encode("<|endoftext|>")  # special tokens in text are plain text


def test_unavailable_files_give_one_clear_paragraph(monkeypatch):
    def offline(name):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    tokenizer.get_tokenizer.cache_clear()
    try:
        with pytest.raises(TokenizerUnavailable, match="needs the internet that one time.*TIKTOKEN_CACHE_DIR"):
            get_tokenizer("gpt2")
    finally:
        tokenizer.get_tokenizer.cache_clear()
