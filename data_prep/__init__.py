"""Corpus -> GPT-2 token shards (``quadgpt prepare``). See ``data_prep.prepare``.

Kept import-free so that ``python -m data_prep`` and worker processes start quickly.
"""
