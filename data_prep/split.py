"""Which documents go to the validation split.

A document's place is a property of the document itself: a hash of its text and the seed gives
it a score in [0, 1), and it is a val document when the score is at most a threshold. So

- the split is the same in every corpus that holds the document (``builtin:stdlib`` and
  ``builtin:stdlib-code`` agree on which code modules are val: a model trained on one is never
  validated on its own training text of the other);
- duplicated documents never straddle train and val;
- a stream needs no look-ahead: the threshold is the fraction itself.

A corpus of known size picks the threshold so that exactly ``val_count`` documents (or those
scoring below ``val_fraction``, at least one) are val.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from data_prep.sources import Corpus, SourceError


class SplitError(ValueError):
    """A validation split that cannot be made as asked."""


def val_score(text: str, seed: int) -> float:
    """The document's position in [0, 1), uniform over documents, fixed by its text and ``seed``."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode()[:64])
    return int.from_bytes(digest.digest(), "little") / 2**64


def non_empty(documents: Iterable[tuple[int, object]], counts: dict[str, int]) -> Iterator[tuple[int, str]]:
    """The documents with text, tallying ``counts["read"]`` and ``counts["empty"]`` (None or blank text)."""
    for domain, text in documents:
        counts["read"] += 1
        if text is None or (isinstance(text, str) and not text.strip()):
            counts["empty"] += 1
            continue
        if not isinstance(text, str):
            raise SourceError(
                f"Document {counts['read']} holds a {type(text).__name__} where text was expected; "
                "pick a string field with --text-field."
            )
        yield domain, text


def val_threshold(corpus: Corpus, val_fraction: float, val_count: int | None, seed: int) -> float:
    """The score at or below which a document is val.

    A corpus of known size is read once here (hashing only) to place the threshold; a stream
    takes ``val_fraction`` as it is, and cannot honour an exact ``val_count``.
    """
    if corpus.num_documents is None:
        if val_count is not None:
            raise SplitError("--val-count needs the document count, unknown while streaming; use --val-fraction.")
        return val_fraction
    counts = {"read": 0, "empty": 0}
    scores = sorted(val_score(text, seed) for _, text in non_empty(corpus.documents, counts))
    if not scores:
        raise SourceError(f"The corpus is empty: {counts['read']} document(s) read, all blank.")
    k = val_count if val_count is not None else max(1, sum(s < val_fraction for s in scores))
    if k >= len(scores):
        raise SplitError(
            f"The corpus has {len(scores)} non-empty documents; a validation split of {k} leaves none to train on. "
            "Lower --val-count / --val-fraction, or add documents."
        )
    return scores[k - 1]
