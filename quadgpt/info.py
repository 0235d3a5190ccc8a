"""``quadgpt info``: what each FFN kind costs at the configured width."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from .config import ConfigError, load_config, split_config_args
from .ffn import FFN_REGISTRY
from .model import GPT


# The rows `quadgpt info` prints: every FFN kind at its defaults, plus the ReLU² MLP baseline.
DEFAULT_ROWS: dict[str, dict] = {kind: {"kind": kind} for kind in FFN_REGISTRY} | {
    "mlp-relu2": {"kind": "mlp", "activation": "relu2"}
}


def kind_table(model_cfg, kinds: list[str] | None = None) -> list[dict]:
    """One row per FFN kind (or per ``DEFAULT_ROWS`` entry when ``kinds`` is None): hidden width,
    total / non-embedding params, training FLOPs/token. A kind equal to the config's own keeps the
    config's FFN settings and width; the others take the config's knobs (rank, grid, ...) at their
    parameter-matched width.

    Models are built on the meta device, so gpt2-medium costs no memory or time.
    """
    rows = []
    specs = DEFAULT_ROWS if kinds is None else {kind: {"kind": kind} for kind in kinds}
    for label, fields in specs.items():
        ffn = dataclasses.replace(model_cfg.ffn, hidden=0, **fields)
        if label == model_cfg.ffn.kind:
            ffn = model_cfg.ffn
        cfg = dataclasses.replace(model_cfg, ffn=ffn)
        with torch.device("meta"):
            model = GPT(cfg)
        rows.append(
            {
                "kind": label,
                "hidden": model.blocks[0].ffn.hidden,
                "params": model.num_params(non_embedding=False),
                "non_embedding_params": model.num_params(non_embedding=True),
                "ffn_params_per_layer": model.blocks[0].ffn.num_params(),
                "flops_per_token": model.flops_per_token(cfg.block_size),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    ref = next((r["non_embedding_params"] for r in rows if r["kind"] == "mlp"), rows[0]["non_embedding_params"])
    header = f"{'ffn':<10} {'hidden':>7} {'params':>14} {'non-emb params':>15} {'vs mlp':>7} {'FFN/layer':>11} {'MFLOPs/token':>13}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['kind']:<10} {r['hidden']:>7} {r['params']:>14,} {r['non_embedding_params']:>15,} "
            f"{r['non_embedding_params'] / ref:>7.3f} {r['ffn_params_per_layer']:>11,} {r['flops_per_token'] / 1e6:>13,.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print, for every FFN kind at the chosen width, total and non-embedding parameters and
    training FLOPs per token (forward + backward, at the full context)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="quadgpt info",
        description=main.__doc__,
        epilog="Any config key can be overridden: --model.n_layer=24 --model.vocab_size=50257 ...",
    )
    try:
        config_path, overrides, rest = split_config_args(argv)
        parser.parse_args(rest)
        config = load_config(config_path, overrides)
    except ConfigError as err:
        print(f"quadgpt info: {err}", file=sys.stderr)
        return 2
    m = config.model
    print(
        f"model: n_layer={m.n_layer} n_head={m.n_head} n_embd={m.n_embd} block_size={m.block_size} "
        f"vocab_size={m.vocab_size} bias={m.bias}"
    )
    print(format_table(kind_table(m)))
    return 0
