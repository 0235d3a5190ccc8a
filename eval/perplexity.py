"""Perplexity of a model on token windows: mean loss, perplexity, bits per byte.

Two kinds of model (a quadgpt checkpoint, or a folder exported for Hugging Face) are both reduced
to one ``logits_fn(idx [B, T]) -> logits [B, T, V]``, so the same windows give the same number
whichever way the weights were loaded; that equality is what proves an export faithful.

Texts longer than the context are scored with a sliding window: windows of ``block_size``
tokens, each starting ``stride`` tokens after the previous, where a window scores only the
targets no earlier window scored. Every target is scored exactly once, and (after the first
window) with at least ``block_size - stride`` tokens of context: stride = block_size is fastest,
a smaller stride gives each prediction more context and a lower, truer loss.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from quadgpt import metrics
from quadgpt.atomic import write_json_atomic
from quadgpt.tokenizer import get_tokenizer

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PerplexityResult:
    loss: float  # mean cross-entropy, nats per scored token
    perplexity: float
    bits_per_byte: float
    tokens: int  # scored targets
    bytes: int  # UTF-8 bytes of the scored targets' text
    windows: int

    def to_dict(self) -> dict:
        return asdict(self)


def sliding_windows(tokens: torch.Tensor, block_size: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a 1-D token sequence into model inputs ``x [W, block_size]`` and targets ``y``.

    Targets a window does not score (already scored by an earlier window) and the padding of the
    last, shorter window are -1, which the loss ignores. See the module docstring for the rule.
    """
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be between 1 and block_size ({block_size}); got {stride}.")
    n = tokens.numel()
    if n < 2:
        raise ValueError(f"Need at least 2 tokens to score a prediction; got {n}.")
    xs, ys = [], []
    scored_upto = 0  # targets tokens[1 .. scored_upto] are done
    for begin in range(0, n - 1, stride):
        end = min(begin + block_size, n - 1)  # inputs tokens[begin:end], targets tokens[begin+1:end+1]
        x = torch.zeros(block_size, dtype=torch.long)
        y = torch.full((block_size,), -1, dtype=torch.long)
        x[: end - begin] = tokens[begin:end]
        first_new = max(scored_upto + 1, begin + 1)  # position (in tokens) of the first unscored target
        y[first_new - begin - 1 : end - begin] = tokens[first_new : end + 1]
        xs.append(x)
        ys.append(y)
        scored_upto = end
        if end == n - 1:
            break
    return torch.stack(xs), torch.stack(ys)


@functools.lru_cache(maxsize=4)
def token_byte_lengths(tokenizer_name: str = "gpt2") -> torch.Tensor:
    """UTF-8 length of each token id's text; 0 for the end-of-text separator, which is not text
    (its loss is charged to the text's bytes). For ``bytes`` every other id is 1 byte, so bits per
    byte is exactly the nats of the scored tokens / ln 2 / the text bytes among them."""
    tokenizer = get_tokenizer(tokenizer_name)
    lengths = torch.tensor([len(tokenizer.token_bytes(i)) for i in range(tokenizer.n_vocab)], dtype=torch.long)
    lengths[tokenizer.eot_id] = 0
    return lengths


@torch.no_grad()
def evaluate_windows(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 8,
    tokenizer_name: str = "gpt2",
    device: str | torch.device = "cpu",
) -> PerplexityResult:
    """Score targets ``y`` (-1 = skip) given inputs ``x``, ``batch_size`` windows at a time.

    Sums are taken per token in float64, so the result does not depend on the batch size.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"x and y must both be [windows, T]; got {tuple(x.shape)} and {tuple(y.shape)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    byte_lengths = token_byte_lengths(tokenizer_name)
    total_nats = 0.0
    for start in range(0, x.size(0), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        logits = logits_fn(xb)
        nats = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), ignore_index=-1, reduction="sum")
        total_nats += float(nats.double())
    scored = y[y >= 0]
    if scored.numel() == 0:
        raise ValueError("No target to score: every entry of y is -1.")
    if int(scored.max()) >= byte_lengths.numel():
        raise ValueError(f"Token id {int(scored.max())} is outside the '{tokenizer_name}' vocabulary.")
    n_bytes = int(byte_lengths[scored].sum())
    loss = metrics.mean_loss(total_nats, scored.numel())
    return PerplexityResult(
        loss=loss,
        perplexity=metrics.perplexity(loss),
        bits_per_byte=metrics.bits_per_byte(total_nats, n_bytes) if n_bytes else math.nan,
        tokens=scored.numel(),
        bytes=n_bytes,
        windows=x.size(0),
    )


def bits_per_nat(targets: torch.Tensor, tokenizer_name: str) -> float:
    """The factor taking a mean loss in nats/token over ``targets`` to bits per byte:
    ``tokens / (ln 2 * bytes)``. With it, the loss curves of the fixed validation windows (nats)
    read in the tokenizer-independent unit."""
    scored = targets[targets >= 0]
    n_bytes = int(token_byte_lengths(tokenizer_name)[scored].sum())
    if n_bytes == 0:
        raise ValueError("The targets hold no text bytes (only end-of-text tokens).")
    return scored.numel() / (math.log(2) * n_bytes)


def validation_bits_per_nat(data_dir: str | Path, block_size: int, n_windows: int, tokenizer_name: str) -> float:
    """``bits_per_nat`` of the fixed validation windows training evaluates on ``data_dir``."""
    from quadgpt.data import validation_windows

    _, y = validation_windows(data_dir, block_size, n_windows)
    return bits_per_nat(y, tokenizer_name)


def unigram_bits_per_byte(data_dir: str | Path, tokenizer_name: str) -> float:
    """The add-one unigram baseline (``quadgpt.data.unigram_baseline_loss``) in bits per byte of
    the whole val split: the floor a context-free model reaches, in the headline unit."""
    from quadgpt.data import TokenDataset, load_meta, unigram_baseline_loss

    counts = TokenDataset(data_dir, "val").token_counts(int(load_meta(data_dir)["vocab_size"]))
    lengths = token_byte_lengths(tokenizer_name)[: len(counts)].numpy()
    n_bytes = int((counts[: len(lengths)] * lengths).sum())
    return unigram_baseline_loss(data_dir) * int(counts.sum()) / (math.log(2) * n_bytes)


# --------------------------------------------------------------------------------------
# Loading a model as a logits function
# --------------------------------------------------------------------------------------


@dataclass
class Scorer:
    """A loaded model reduced to what evaluation needs."""

    logits_fn: LogitsFn
    block_size: int
    tokenizer_name: str
    device: torch.device
    source: str  # "checkpoint" or "hf"


def is_hf_export(path: str | Path) -> bool:
    """An exported Hugging Face folder: a ``config.json`` naming a ``model_type``."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    return "model_type" in json.loads(config.read_text())


def load_scorer(path: str | Path, device: str = "cpu") -> Scorer:
    """Load a quadgpt checkpoint (folder, run folder, ``RUN/last``) or an HF export folder for scoring."""
    device_t = torch.device(device)
    if is_hf_export(path):
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=True, torch_dtype=torch.float32)
        hf_model.to(device_t).eval()
        block_size = int(hf_model.config.max_position_embeddings)  # quadgpt's block_size, GPT-2's n_positions
        from quadgpt.hf.tokenizer_export import exported_tokenizer_name

        tokenizer_name = exported_tokenizer_name(path)
        return Scorer(lambda idx: hf_model(input_ids=idx).logits, block_size, tokenizer_name, device_t, "hf")

    from quadgpt.checkpoint import load_model

    model, config, meta = load_model(path, device=device)  # in eval mode
    return Scorer(lambda idx: model(idx)[0], config.model.block_size, config.model.tokenizer, device_t, "checkpoint")


def text_tokens(path: str | Path, tokenizer_name: str = "gpt2") -> torch.Tensor:
    """Token ids of a UTF-8 text file (special tokens treated as plain text)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Text file '{path}' does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"'{path}' is not UTF-8 text ({err}); convert it first.") from err
    return torch.tensor(get_tokenizer(tokenizer_name).encode(text), dtype=torch.long)


def main(argv: list[str]) -> int:
    """Perplexity of a model: ``quadgpt eval ppl MODEL (--data DIR | --text FILE) [--split val]
    [--windows N] [--stride S] [--batch-size B] [--device cpu] [--json OUT]``.

    MODEL is a quadgpt checkpoint (or run folder) or a Hugging Face export folder. ``--data``
    scores a prepared dataset's split: its whole stream with a sliding window, or with
    ``--windows N`` the N fixed validation windows training reports (the same number as the
    run's val_loss). ``--text`` scores a UTF-8 file with a sliding window."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="quadgpt eval ppl", description=main.__doc__)
    parser.add_argument("model", help="checkpoint folder, run folder (its best), RUN/last, or an HF export folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="prepared dataset folder (quadgpt prepare)")
    source.add_argument("--text", help="UTF-8 text file")
    parser.add_argument("--split", default="val", help="split of --data (default val)")
    parser.add_argument("--windows", type=int, default=0, help="--data: score N fixed validation windows instead")
    parser.add_argument("--stride", type=int, default=0, help="sliding-window stride (default: the context length)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--json", dest="json_out", help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    from quadgpt.checkpoint import CheckpointError
    from quadgpt.data import DataError, TokenDataset, validation_windows

    try:
        if args.json_out:  # checked before the (slow) evaluation: never written over an input
            from quadgpt.safety import check_output_path

            check_output_path(args.json_out, [args.model, args.data, args.text], what="--json", suffix="ppl")
        scorer = load_scorer(args.model, args.device)
        stride = args.stride or scorer.block_size
        if args.data and args.windows:
            x, y = validation_windows(args.data, scorer.block_size, args.windows, split=args.split)
        else:
            if args.data:
                dataset = TokenDataset(args.data, args.split)
                tokens = torch.from_numpy(dataset.read(0, len(dataset)).astype("int64"))
            else:
                tokens = text_tokens(args.text, scorer.tokenizer_name)
            x, y = sliding_windows(tokens, scorer.block_size, stride)
        result = evaluate_windows(scorer.logits_fn, x, y, args.batch_size, scorer.tokenizer_name, scorer.device)
    except (CheckpointError, DataError, FileNotFoundError, ValueError) as err:
        print(f"quadgpt eval ppl: error: {err}", file=sys.stderr)
        return 2
    record = result.to_dict() | {"model": str(args.model), "loaded_as": scorer.source, "source": args.data or args.text,
                                 "split": args.split if args.data else None, "stride": None if args.windows else stride}
    print(
        f"loss {result.loss:.4f} | ppl {result.perplexity:.2f} | bits/byte {result.bits_per_byte:.4f} | "
        f"{result.tokens:,} tokens ({result.bytes:,} bytes) in {result.windows} windows"
    )
    if args.json_out:
        write_json_atomic(Path(args.json_out), record)
    return 0
