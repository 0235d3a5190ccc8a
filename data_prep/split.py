"""Which documents go to the validation split.

A document's place is a property of the document itself: a hash of its text and the seed gives
it a score in [0, 1), and it is a val document when the score is at most a threshold. So

- the split is the same in every corpus that holds the document (``builtin:stdlib`` and
  ``builtin:stdlib-code`` agree on which code modules are val: a model trained on one is never
  validated on its own training text of the other);
- duplicated documents never straddle train and val;
- a stream needs no look-ahead: the threshold is the fraction itself.

A corpus of known size picks the threshold so that exactly ``val_count`` documents (or those
scoring below ``val_fraction``, at least one) are val. A corpus of one document cannot be split
by document: prepare then splits it by position (the tail of its tokens).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from data_prep.sources import Corpus, SourceError


# Why a record is left out of a corpus: its text field is null/missing, or holds only whitespace.
DROP_REASONS = ("missing", "blank")


class SplitError(ValueError):
    """A validation split that cannot be made as asked."""


def val_score(text: str, seed: int) -> float:
    """The document's position in [0, 1), uniform over documents, fixed by its text and ``seed``."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode()[:64])
    return int.from_bytes(digest.digest(), "little") / 2**64


def non_empty(documents: Iterable[tuple[int, object]], counts: dict[str, int]) -> Iterator[tuple[int, str]]:
    """The documents with text, tallying ``counts["read"]`` and, per ``DROP_REASONS``, those left out:
    ``counts["missing"]`` (no value: None) and ``counts["blank"]`` (whitespace only).

    Raises ``SourceError`` for a value that is not text (e.g. a number: the wrong --text-field).
    """
    for domain, text in documents:
        counts["read"] += 1
        if text is None:
            counts["missing"] += 1
            continue
        if not isinstance(text, str):
            raise SourceError(
                f"Document {counts['read']} holds a {type(text).__name__} where text was expected; "
                "pick a string field with --text-field."
            )
        if not text.strip():
            counts["blank"] += 1
            continue
        yield domain, text


def val_threshold(corpus: Corpus, val_fraction: float, val_count: int | None, seed: int) -> float | None:
    """The score at or below which a document is val; None when the corpus has one document,
    too few to split by document (prepare then splits it by position).

    A corpus of known size is read once here (hashing only) to place the threshold; a stream
    takes ``val_fraction`` as it is, and cannot honour an exact ``val_count``.
    """
    if corpus.num_documents is None:
        if val_count is not None:
            raise SplitError("--val-count needs the document count, unknown while streaming; use --val-fraction.")
        return val_fraction
    counts = {"read": 0, "missing": 0, "blank": 0}
    scores = sorted(val_score(text, seed) for _, text in non_empty(corpus.documents, counts))
    if not scores:
        raise SourceError(f"The corpus is empty: {counts['read']} document(s) read, none with text.")
    if val_count is None and len(scores) == 1:
        return None
    k = val_count if val_count is not None else max(1, sum(s < val_fraction for s in scores))
    if k >= len(scores):
        if len(scores) == 1:  # val_count: documents cannot split one document
            fix = ("drop --val-count: a one-document corpus is then split by position (the last 10% of its "
                   "tokens, or --val-fraction F of them, are val)")
        elif val_count is not None:
            fix = f"lower --val-count to at most {len(scores) - 1}"
        else:
            fix = "lower --val-fraction, or use --val-count"
        raise SplitError(
            f"The corpus has {len(scores)} non-empty documents; a validation split of {k} leaves none to train on: "
            f"{fix}."
        )
    return scores[k - 1]
