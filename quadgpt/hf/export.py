"""``quadgpt export CKPT OUT``: a checkpoint as a folder that ``transformers`` loads offline.

Two formats:

- ``quadgpt`` (default, every FFN kind): ``config.json`` (``model_type: quadgpt`` and an
  ``auto_map`` to the two code files), ``configuration_quadgpt.py`` and ``modeling_quadgpt.py``
  (pure PyTorch), ``model.safetensors``; load with ``trust_remote_code=True``.
- ``gpt2`` (an ``mlp`` model): a plain ``GPT2LMHeadModel`` folder, no remote code.

Both add the checkpoint's tokenizer files (GPT-2 BPE or bytes, ``tokenizer_export.py``), ``generation_config.json`` (the checkpoint's sampling
defaults) and a model card ``README.md``. The folder is written beside ``OUT`` and renamed into
place when complete. ``--push-to-hub REPO_ID`` then uploads it with ``huggingface_hub``
(authenticate first: ``huggingface-cli login`` or ``HF_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from .. import __version__
from ..checkpoint import (
    CheckpointError,
    commit_tmp_folder,
    load_model,
    prepare_tmp_folder,
    read_config,
    resolve_checkpoint,
    weights_for_saving,
)
from ..config import Config
from ..model import GPT
from ..safety import UnsafeOutput, check_output_path, existing_output
from ..sampling import check_sampling_args
from ..tokenizer import TokenizerUnavailable, get_tokenizer
from .configuration_quadgpt import FFN_KINDS
from .convert import (
    gpt2_config_kwargs,
    gpt2_shape_problems,
    max_logit_difference,
    quadgpt_hf_config_kwargs,
    to_gpt2_state,
    to_quadgpt_hf_state,
    trim_vocab,
)
from .tokenizer_export import write_tokenizer

if TYPE_CHECKING:
    from transformers import GenerationConfig

# file in the export -> its source in this package: the modeling code computes with quadgpt's
# own FFN math (ffn/functional.py), copied, so an export cannot drift from what was trained
CODE_FILES = {
    "configuration_quadgpt.py": Path(__file__).with_name("configuration_quadgpt.py"),
    "modeling_quadgpt.py": Path(__file__).with_name("modeling_quadgpt.py"),
    "ffn_functional.py": Path(__file__).parents[1] / "ffn" / "functional.py",
}
# exported logits must equal quadgpt's (fp32, the same math): far below any real difference
PARITY_ATOL = 1e-4
# config.json key marking a folder as quadgpt's export: the only kind --overwrite replaces
EXPORT_MARK = "exported_by"
AUTO_MAP = {
    "AutoConfig": "configuration_quadgpt.QuadGPTConfig",
    "AutoModelForCausalLM": "modeling_quadgpt.QuadGPTForCausalLM",
}
FFN_FORMULAS = {
    "mlp": "y = act(x W1 + b1) W2 + b2, act = {activation}",
    "swiglu": "y = (silu(x W_gate) * (x W_up)) W_down",
    "quadratic": "h_j = sum_k<{rank} (x.u_jk)(x.v_jk) + x.w_j + b_j (no activation), y = h W_proj + b",
    "kan": "two KAN layers; each edge i->j is phi(x) = sum_b c_b B_b(tanh x) + w silu(x) "
    "(B-splines of order {spline_order} on {grid_size} uniform intervals of [-1, 1])",
}


# --------------------------------------------------------------------------------------
# Writing an export
# --------------------------------------------------------------------------------------


def write_folder(out: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a fresh sibling of ``out``, then rename it to ``out``; on failure
    remove the temporary folder and leave any earlier ``out`` as it was."""
    tmp = prepare_tmp_folder(out)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit_tmp_folder(out)


def generation_config(config: Config) -> GenerationConfig:
    """The checkpoint's ``[sample]`` defaults as a ``GenerationConfig`` (temperature 0 = greedy)."""
    from transformers import GenerationConfig

    s = config.sample
    check_sampling_args(s.temperature, s.top_k, s.top_p)
    eot = get_tokenizer(config.model.tokenizer).eot_id
    sampling = dict(do_sample=True, temperature=s.temperature, top_k=s.top_k or None, top_p=s.top_p)
    return GenerationConfig(
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        **(sampling if s.temperature > 0 else {"do_sample": False}),
    )


def model_card(model: GPT, config: Config, meta: dict[str, Any], fmt: str) -> str:
    """``README.md`` of the export: what the model is, how it was trained, how to load it."""
    m, ffn = config.model, config.model.ffn
    formula = FFN_FORMULAS[ffn.kind].format(**vars(ffn))
    val_loss = meta.get("val_loss")
    loss_text = f"{val_loss:.4f} nats/token" if isinstance(val_loss, (int, float)) else "not recorded"
    tokens = meta.get("tokens")
    data_text = f"`{meta.get('dataset', config.data.dataset)}`"
    data_text += f", {tokens:,} tokens" if isinstance(tokens, int) else ""
    data_text += f", {meta['step']} steps" if isinstance(meta.get("step"), int) else ""
    if fmt == "quadgpt":
        format_text = "`quadgpt` (custom code: configuration_quadgpt.py, modeling_quadgpt.py, pure PyTorch)"
    else:
        format_text = "`gpt2` (GPT2LMHeadModel)"
    # transformers 5's AutoTokenizer reads config.json first, and asks before running its code
    remote = ", trust_remote_code=True" if fmt == "quadgpt" else ""
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [quadgpt, {ffn.kind}]
---

# quadgpt: GPT with a `{ffn.kind}` feed-forward block

A GPT-2-style decoder (learned positions, pre-LayerNorm, tied LM head) trained with quadgpt,
a nanoGPT-style GPT whose feed-forward block is pluggable (mlp, swiglu, quadratic, kan).

| | |
|---|---|
| FFN | `{ffn.kind}`, hidden width {model.blocks[0].ffn.hidden}: `{formula}` |
| parameters | {model.num_params(non_embedding=False):,} ({model.num_params():,} without embeddings) |
| shape | {m.n_layer} layers, {m.n_head} heads, width {m.n_embd}, context {m.block_size}, vocabulary {m.vocab_size} |
| training data | {data_text} |
| validation loss | {loss_text} |
| tokenizer | `{m.tokenizer}`; token {get_tokenizer(m.tokenizer).eot_id} (end of text) separates documents |
| format | {format_text} |

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO"{remote})
model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO"{remote})
ids = tokenizer("import os\\n", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=50)[0]))
```
"""


def write_quadgpt_files(folder: Path, model: GPT, config: Config, vocab: int) -> None:
    """config.json + the code files + model.safetensors of the remote-code format, with the
    vocabulary trimmed to its first ``vocab`` rows (the ids the tokenizer has)."""
    from .configuration_quadgpt import QuadGPTConfig

    hf_config = QuadGPTConfig(**{**quadgpt_hf_config_kwargs(config.model), "vocab_size": vocab})
    hf_config.auto_map = dict(AUTO_MAP)
    hf_config.architectures = ["QuadGPTForCausalLM"]
    setattr(hf_config, EXPORT_MARK, f"quadgpt {__version__}")
    hf_config.save_pretrained(folder)
    for name, source in CODE_FILES.items():
        shutil.copyfile(source, folder / name)
    state = weights_for_saving(to_quadgpt_hf_state(trim_vocab(model.state_dict(), vocab)))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def write_gpt2_files(folder: Path, model: GPT, config: Config, vocab: int) -> None:
    """config.json + model.safetensors of a plain ``GPT2LMHeadModel`` (head tied, not stored),
    vocabulary trimmed to ``vocab`` rows."""
    from transformers import GPT2Config

    hf_config = GPT2Config(**{**gpt2_config_kwargs(config.model), "vocab_size": vocab})
    hf_config.architectures = ["GPT2LMHeadModel"]
    setattr(hf_config, EXPORT_MARK, f"quadgpt {__version__}")
    hf_config.save_pretrained(folder)
    state = weights_for_saving(to_gpt2_state(trim_vocab(model.state_dict(), vocab), config.model))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def check_export_parity(folder: Path, model: GPT, vocab: int, fmt: str) -> None:
    """Load ``folder`` with transformers and compare its logits with ``model``'s on a few tokens.

    Raises ValueError with the largest difference when they disagree by more than
    ``PARITY_ATOL``: an export that computes something else must not be reported as done.
    """
    from transformers import AutoModelForCausalLM

    # transformers names the remote-code module after the folder, and older versions cannot
    # import one named like our hidden temporary folder (".tmp-OUT"): load through a link
    with tempfile.TemporaryDirectory() as scratch:
        link = Path(scratch) / "quadgpt_export_check"
        link.symlink_to(folder.resolve(), target_is_directory=True)
        hf = AutoModelForCausalLM.from_pretrained(link, trust_remote_code=fmt == "quadgpt", dtype=torch.float32)
    diff = max_logit_difference(model.float(), hf.eval(), vocab)
    if not diff <= PARITY_ATOL:
        raise ValueError(
            f"the exported model's logits differ from the checkpoint's by {diff:.3g} (tolerance {PARITY_ATOL}); "
            "nothing was written."
        )


def check_exportable(config: Config, fmt: str) -> None:
    """ValueError saying why ``config``'s model cannot be exported in format ``fmt``."""
    kind = config.model.ffn.kind
    if kind not in FFN_KINDS:
        raise ValueError(
            f"FFN kind '{kind}' has no pure-PyTorch version in the export's modeling file "
            f"(quadgpt/hf/modeling_quadgpt.py knows {', '.join(FFN_KINDS)}): add it there to export this model."
        )
    if fmt == "gpt2":
        problems = gpt2_shape_problems(config.model)
        if problems:
            raise ValueError("--format gpt2 needs a GPT-2-shaped model, but " + "; ".join(problems) + ".")


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is a quadgpt export (its config.json carries ``EXPORT_MARK``)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and str(config.get(EXPORT_MARK, "")).startswith("quadgpt")


def export(checkpoint: str | Path, out: str | Path, fmt: str = "quadgpt", overwrite: bool = False) -> Path:
    """Export ``checkpoint`` (folder or run, see ``resolve_checkpoint``) to the folder ``out``.

    Raises ``UnsafeOutput`` when ``out`` is, holds or lies inside the checkpoint or its run, or
    exists holding anything but an earlier export (which only ``overwrite`` replaces)."""
    out = Path(out)
    folder = resolve_checkpoint(checkpoint)
    check_exportable(read_config(folder), fmt)  # before building the model: a clearer error
    check_output_path(out, [checkpoint, folder], what="OUT", suffix="hf")
    if existing_output(out, is_export, "quadgpt export", what="OUT") and not overwrite:
        raise UnsafeOutput(f"'{out}' holds an earlier export; pass --overwrite to replace it, or choose a new folder.")
    model, config, meta = load_model(folder)
    generation_config(config)  # refuses sampling defaults that cannot be used, before any writing
    vocab = model.token_vocab_size  # ids the tokenizer has: the padding rows are not exported
    write_weights = write_quadgpt_files if fmt == "quadgpt" else write_gpt2_files

    def write(tmp: Path) -> None:
        write_weights(tmp, model, config, vocab)
        write_tokenizer(tmp, config.model.tokenizer, config.model.block_size)
        generation_config(config).save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(model, config, meta, fmt))
        check_export_parity(tmp, model, vocab, fmt)

    return write_folder(out, write)


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create the model repo ``repo_id`` if needed and upload ``folder``; returns the commit URL.
    Needs a token: ``huggingface-cli login`` or the ``HF_TOKEN`` environment variable."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="quadgpt export"
    )
    return str(commit)


def main(argv: list[str] | None = None) -> int:
    """Export a checkpoint to a Hugging Face model folder (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="quadgpt export",
        description="Write a checkpoint as a folder that transformers' AutoModelForCausalLM and "
        "AutoTokenizer load offline (the quadgpt format needs trust_remote_code=True).",
    )
    parser.add_argument("checkpoint", help="checkpoint folder, run folder (its best, else latest), RUN/best or RUN/last")
    parser.add_argument("out", help="output folder: new, empty, or an earlier export with --overwrite")
    parser.add_argument(
        "--format",
        choices=["quadgpt", "gpt2"],
        default="quadgpt",
        help="quadgpt: any FFN kind, with its modeling code; gpt2: plain GPT2LMHeadModel (mlp models only)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at OUT (nothing else)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload OUT to this Hugging Face model repo")
    parser.add_argument("--private", action="store_true", help="create the hub repo as private")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        out = export(args.checkpoint, args.out, args.format, args.overwrite)
    except UnsafeOutput as err:
        print(f"quadgpt export: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, ValueError, TokenizerUnavailable, OSError) as err:
        print(f"quadgpt export: {err}", file=sys.stderr)
        return 1
    print(f"exported {resolve_checkpoint(args.checkpoint)} -> {out} ({args.format} format)")
    if args.push_to_hub:
        try:
            commit = push_to_hub(out, args.push_to_hub, args.private)
            print(f"pushed to https://huggingface.co/{args.push_to_hub}: {commit}")
        except Exception as err:  # hub errors: auth, network, permissions
            print(f"quadgpt export: upload to '{args.push_to_hub}' failed ({type(err).__name__}: {err}); "
                  "the export itself is complete at " + str(out), file=sys.stderr)
            return 1
    return 0
