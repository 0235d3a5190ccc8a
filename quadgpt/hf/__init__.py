"""Hugging Face interop: export a checkpoint as a ``transformers`` model folder (remote-code
``quadgpt`` or plain GPT-2), import GPT-2 weights as a quadgpt checkpoint.

``configuration_quadgpt.py`` and ``modeling_quadgpt.py`` are copied verbatim into exports, so
they import nothing from quadgpt. Weight and config conversions live in ``convert.py``, the GPT-2
tokenizer files (from tiktoken's cache) in ``tokenizer_files.py``.
"""
