"""``quadgpt import-hf PATH_OR_NAME --out CKPT``: GPT-2 weights as a quadgpt checkpoint.

Reads a ``GPT2LMHeadModel`` folder (or a hub name such as ``openai-community/gpt2``, which
needs the internet once), converts its weights (``quadgpt.hf.convert``) and saves a checkpoint
that ``quadgpt sample``, ``--train.init_from`` and the evaluations take like any other: so
GPT-2 can be fine-tuned, sampled and compared with models trained here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, is_checkpoint, save_model_checkpoint
from ..config import Config
from ..model import GPT
from ..safety import UnsafeOutput, check_output_path, existing_output
from .convert import from_gpt2_state, max_logit_difference, model_config_from_gpt2
from .export import PARITY_ATOL


def load_gpt2(source: str):
    """The ``GPT2LMHeadModel`` at ``source`` (local folder or hub name), in fp32."""
    from transformers import AutoConfig, GPT2LMHeadModel

    try:
        hf_config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        where = "folder" if Path(source).exists() else "hub name (needs the internet the first time)"
        raise ValueError(f"Could not read a model config from '{source}' as a {where}: {err}") from err
    if hf_config.model_type != "gpt2":
        raise ValueError(
            f"'{source}' is a '{hf_config.model_type}' model; import-hf converts GPT-2 models "
            "(a quadgpt export is already quadgpt: use the checkpoint it came from)."
        )
    return GPT2LMHeadModel.from_pretrained(source, dtype=torch.float32).eval()


def check_import_parity(hf_model, model: GPT) -> None:
    """ValueError when ``model`` (the conversion) and ``hf_model`` (its source) disagree on the
    logits of a few tokens by more than ``PARITY_ATOL``: the conversion lost something."""
    diff = max_logit_difference(model, hf_model, model.config.vocab_size)
    if not diff <= PARITY_ATOL:
        raise ValueError(
            f"the converted model's logits differ from the source's by {diff:.3g} (tolerance {PARITY_ATOL}): "
            "the source uses something the conversion does not carry; nothing was written."
        )


def import_gpt2(source: str, out: str | Path, force: bool = False) -> Path:
    """Convert the GPT-2 model ``source`` into a quadgpt checkpoint folder ``out``; returns ``out``.

    Raises ``UnsafeOutput`` (before loading anything) when ``out`` is, holds or lies inside a
    local ``source``, or exists holding anything but a quadgpt checkpoint, which only ``force``
    replaces."""
    out = Path(out)
    check_output_path(out, [source] if Path(source).exists() else [], suffix="quadgpt")
    if existing_output(out, is_checkpoint, "quadgpt") and not force:
        raise UnsafeOutput(f"--out '{out}' holds a quadgpt checkpoint; pass --force to replace it, or choose a new folder.")
    hf_model = load_gpt2(source)
    model_config = model_config_from_gpt2(hf_model.config)
    model = GPT(model_config)
    model.load_state_dict(from_gpt2_state(hf_model.state_dict(), model_config), strict=True)
    check_import_parity(hf_model, model.eval())
    meta = {"dataset": f"GPT-2 pretraining data (imported from {source})", "imported_from": source}
    return save_model_checkpoint(out, model, Config(model=model_config), meta)


def main(argv: list[str] | None = None) -> int:
    """Turn a GPT-2 Hugging Face model into a quadgpt checkpoint."""
    parser = argparse.ArgumentParser(prog="quadgpt import-hf", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="GPT2LMHeadModel folder, or a hub name (e.g. openai-community/gpt2)")
    parser.add_argument("--out", required=True, help="checkpoint folder to write (new or empty)")
    parser.add_argument("--force", action="store_true", help="replace a quadgpt checkpoint at --out (nothing else)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        out = import_gpt2(args.source, args.out, force=args.force)
    except UnsafeOutput as err:
        print(f"quadgpt import-hf: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, ValueError, OSError) as err:
        print(f"quadgpt import-hf: {err}", file=sys.stderr)
        return 1
    print(f"imported {args.source} -> {out}")
    return 0
