"""``quadgpt sample`` and ``python sample.py``: text from a checkpoint, streamed as it is generated.

The model's ``generate`` does the decoding (KV cache, temperature / top-k / top-p, context
cropping); this module adds what a person at a terminal needs around it: prompts from flags,
files or stdin, several prompts in one batch, stop strings, a seed that reproduces the text, and
text that appears token by token.

Batching: the model has no padding mask, so prompts are grouped by token length and each group
(times ``--num-samples``) is one batch. A batch of one streams to stdout as it is generated; a
larger batch prints each sample when the batch is done (interleaving rows would be unreadable).
"""

from __future__ import annotations

import argparse
import codecs
import io
import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .model import GPT
from .sampling import check_sampling_args
from .tokenizer import Tokenizer, TokenizerUnavailable, get_tokenizer

SEPARATOR = "\n" + "-" * 40 + "\n"


class TextStream:
    """One sample's generated text, decoded token by token.

    ``push`` returns only text that is final: bytes of a UTF-8 character split across tokens
    wait for the rest, and a tail that could still grow into a stop string is held back. The
    sample ends at the first stop string (which is not part of the text) or at ``stop_token``
    (usually ``tokenizer.eot_id``; None = never).
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), stop_token: int | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.stop_token = stop_token
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # decoded so far (after the end: the final text)
        self.emitted = 0  # characters of ``text`` already returned
        self.done = False

    def push(self, token: int) -> str:
        if self.done:
            return ""
        if token == self.stop_token:
            return self.finish()
        self.text += self.decoder.decode(self.tokenizer.token_bytes(token))
        if self._cut_at_stop():
            return self._take(len(self.text))
        return self._take(len(self.text) - self._held_back())

    def finish(self) -> str:
        """End the sample; return the text not yet returned."""
        if not self.done:
            self.text += self.decoder.decode(b"", final=True)
            self._cut_at_stop()
            self.done = True
        return self._take(len(self.text))

    def _cut_at_stop(self) -> bool:
        # a stop string can only end in text not yet returned, so search from there back
        start = max(0, self.emitted - max((len(s) for s in self.stop), default=0))
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.done = True
        return bool(hits)

    def _held_back(self) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def _take(self, end: int) -> str:
        end = max(end, self.emitted)
        out = self.text[self.emitted : end]
        self.emitted = end
        return out


@dataclass
class SampleSettings:
    """How to sample (the ``quadgpt sample`` flags); ``top_k = 0`` or None is off."""

    num_samples: int = 1
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = 1.0
    stop: tuple[str, ...] = ()
    stop_at_eot: bool = True
    seed: int = 1337
    use_cache: bool = True

    def check(self, block_size: int) -> None:
        """Raise ValueError naming the flag and the fix for a setting that cannot work."""
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        if self.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1; got {self.num_samples}.")
        if not 1 <= self.max_new_tokens < block_size:
            raise ValueError(
                f"--max-new-tokens must be in [1, {block_size - 1}] (below the model's context of "
                f"{block_size} tokens, which prompt and new tokens share); got {self.max_new_tokens}."
            )


def encode_prompts(prompts: Sequence[str], tokenizer: Tokenizer | None = None) -> list[list[int]]:
    """Token ids of each prompt (default tokenizer: GPT-2's); a prompt that tokenises to nothing is
    an error (nothing to continue)."""
    tokenizer = tokenizer or get_tokenizer()
    encoded = [tokenizer.encode(p) for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(
                f"Prompt {i + 1} ({prompts[i]!r}) tokenises to nothing; give at least one character "
                "(e.g. --prompt $'\\n', the default, to start a fresh document)."
            )
    return encoded


def default_max_new_tokens(wanted: int, block_size: int, prompt_tokens: int) -> int:
    """``max_new_tokens`` when the user gave none: ``wanted`` (the checkpoint's default) cut to
    the room the prompt leaves in the context, so the prompt is not cropped to make space. A
    prompt that fills the context on its own gets half the context (and is cropped)."""
    room = block_size - prompt_tokens
    return min(wanted, room) if room >= 1 else min(wanted, max(1, block_size // 2))


def crop_prompts(encoded: Sequence[list[int]], block_size: int, max_new_tokens: int) -> list[list[int]]:
    """Each prompt's last tokens that fit beside ``max_new_tokens`` new ones: the model's rule
    (``GPT.crop_prompt``), applied here so that the text shown is the text the model saw."""
    keep = max(1, block_size - max_new_tokens)
    return [list(ids[-keep:]) for ids in encoded]


def generate_texts(
    model: GPT,
    prompts: Sequence[str],
    settings: SampleSettings,
    device: torch.device | str = "cpu",
    on_text: Callable[[int, int, str], None] | None = None,
) -> list[list[str]]:
    """Generate ``settings.num_samples`` continuations of each prompt; returns ``texts[prompt][sample]``.

    ``on_text(prompt_index, sample_index, piece)`` receives final text as soon as it is known
    (see ``TextStream``). The same model, prompts, settings and seed give the same texts.
    """
    settings.check(model.config.block_size)
    tokenizer = get_tokenizer(model.config.tokenizer)
    encoded = crop_prompts(encode_prompts(prompts, tokenizer), model.config.block_size, settings.max_new_tokens)
    return generate_from_ids(model, encoded, settings, device, on_text)


def generate_from_ids(
    model: GPT,
    encoded: Sequence[list[int]],
    settings: SampleSettings,
    device: torch.device | str = "cpu",
    on_text: Callable[[int, int, str], None] | None = None,
) -> list[list[str]]:
    """``generate_texts`` for prompts already tokenised (and cropped to fit the context)."""
    device = torch.device(device)
    tokenizer = get_tokenizer(model.config.tokenizer)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    texts: list[list[str]] = [[""] * settings.num_samples for _ in encoded]
    for group in by_length.values():
        rows = [(p, s) for p in group for s in range(settings.num_samples)]
        streams = [TextStream(tokenizer, settings.stop, tokenizer.eot_id if settings.stop_at_eot else None) for _ in rows]
        idx = torch.tensor([encoded[p] for p, _ in rows], dtype=torch.long, device=device)

        def emit(row: int, piece: str) -> None:
            if piece and on_text is not None:
                on_text(*rows[row], piece)

        def on_token(step: int, tokens: torch.Tensor) -> bool:
            for row, token in enumerate(tokens.tolist()):
                emit(row, streams[row].push(token))
            return all(s.done for s in streams)

        model.generate(
            idx,
            settings.max_new_tokens,
            temperature=settings.temperature,
            top_k=settings.top_k or None,
            top_p=settings.top_p,
            use_cache=settings.use_cache,
            generator=generator,
            on_token=on_token,
        )
        for row, stream in enumerate(streams):
            emit(row, stream.finish())
            prompt_index, sample_index = rows[row]
            texts[prompt_index][sample_index] = stream.text
    return texts


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quadgpt sample",
        description="Generate text from a checkpoint; tokens stream to stdout as they are generated. "
        "Defaults come from the checkpoint's [sample] config section.",
    )
    parser.add_argument("checkpoint", help="checkpoint folder, run folder (its best, else latest), RUN/best or RUN/last")
    parser.add_argument("--prompt", action="append", help="prompt text; repeat for a batch of prompts")
    parser.add_argument(
        "--prompt-file", action="append", help="file holding one prompt ('-' = stdin); repeatable"
    )
    parser.add_argument(
        "--prompts-per-line", action="store_true", help="each non-empty line of --prompt-file / stdin is its own prompt"
    )
    parser.add_argument("--num-samples", type=int, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, help="tokens to generate per sample")
    parser.add_argument("--temperature", type=float, help="0 = greedy (argmax)")
    parser.add_argument("--top-k", type=int, help="keep the k most likely tokens (0 = off)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling: keep the smallest set of mass >= p, in (0, 1]")
    parser.add_argument(
        "--stop", action="append", default=[], help="end a sample at this string (repeatable; \\n and \\t escapes work)"
    )
    parser.add_argument("--ignore-eot", action="store_true", help="do not end a sample at <|endoftext|>")
    parser.add_argument("--seed", type=int, help="random seed: the same seed gives the same text")
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="auto = bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context every step (slow)")
    return parser


def read_prompts(args: argparse.Namespace, default: str, stdin=None) -> list[str]:
    """Prompts from ``--prompt``, ``--prompt-file`` ('-' = stdin), else piped stdin, else ``default``
    (the checkpoint's ``sample.prompt``)."""
    stdin = stdin if stdin is not None else sys.stdin
    prompts = list(args.prompt or [])
    files = list(args.prompt_file or [])
    if not prompts and not files and is_piped(stdin):
        files = ["-"]
    for name in files:
        if name == "-":
            text = stdin.read()
        else:
            try:
                with open(name, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as err:
                raise ValueError(f"--prompt-file '{name}' cannot be read: {err.strerror}.") from err
        prompts += [line for line in text.splitlines() if line.strip()] if args.prompts_per_line else [text]
    return prompts or [default]


def unescape(text: str) -> str:
    """Backslash escapes (``\\n``, ``\\t``, ``\\\\``) as a shell passes them in single quotes;
    other characters, non-ASCII included, are kept as they are."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def is_piped(stream) -> bool:
    """True when ``stream`` is a pipe or a redirected file (not a terminal, not /dev/null)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def resolve_device(name: str) -> torch.device:
    """``--device``: ``auto`` is CUDA when there is one; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device here; use --device cpu (or auto).")
    return device


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--dtype`` (None = plain fp32)."""
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def main(argv: list[str] | None = None) -> int:
    """Generate text from a checkpoint (see ``quadgpt sample --help``)."""
    from .checkpoint import CheckpointError, load_model

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        device = resolve_device(args.device)
        model, config, _ = load_model(args.checkpoint, device=device)
        defaults = config.sample
        prompts = read_prompts(args, defaults.prompt)
        encoded = encode_prompts(prompts, get_tokenizer(model.config.tokenizer))
        block_size = model.config.block_size
        settings = SampleSettings(
            num_samples=defaults.num_samples if args.num_samples is None else args.num_samples,
            max_new_tokens=(
                default_max_new_tokens(defaults.max_new_tokens, block_size, max(map(len, encoded)))
                if args.max_new_tokens is None
                else args.max_new_tokens
            ),
            temperature=defaults.temperature if args.temperature is None else args.temperature,
            top_k=defaults.top_k if args.top_k is None else args.top_k,
            top_p=defaults.top_p if args.top_p is None else args.top_p,
            stop=tuple(unescape(s) for s in args.stop),
            stop_at_eot=not args.ignore_eot,
            seed=defaults.seed if args.seed is None else args.seed,
            use_cache=not args.no_cache,
        )
        settings.check(block_size)
    except (CheckpointError, ValueError) as err:
        print(f"quadgpt sample: {err}", file=sys.stderr)
        return 2  # bad input (checkpoint, flags, prompt); nothing was generated
    except TokenizerUnavailable as err:  # the machine, not the input
        print(f"quadgpt sample: {err}", file=sys.stderr)
        return 1

    seen = crop_prompts(encoded, block_size, settings.max_new_tokens)
    for i, (ids, kept) in enumerate(zip(encoded, seen)):
        if len(kept) < len(ids):
            print(
                f"quadgpt sample: prompt {i + 1} has {len(ids)} tokens; with {settings.max_new_tokens} new ones "
                f"only its last {len(kept)} fit the context of {block_size}, and that is what is shown.",
                file=sys.stderr,
            )
    tokenizer = get_tokenizer(model.config.tokenizer)
    shown = [tokenizer.decode(ids) for ids in seen]
    streaming = len(prompts) * settings.num_samples == 1
    out = sys.stdout

    def on_text(prompt_index: int, sample_index: int, piece: str) -> None:
        if streaming:
            out.write(piece)
            out.flush()

    if streaming:
        out.write(shown[0])
        out.flush()
    dtype = autocast_dtype(args.dtype, device)
    try:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            texts = generate_from_ids(model, seen, settings, device, on_text)
        if streaming:
            out.write(SEPARATOR)
        else:
            for prompt, samples in zip(shown, texts):
                for sample in samples:
                    out.write(prompt + sample + SEPARATOR)
        out.flush()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 1
    return 0
