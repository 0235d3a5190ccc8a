"""Generation speed with and without the KV cache: tokens/s for N new tokens and their ratio.

    python bench/generate.py                                   # tiny model (configs/tiny.toml), CPU
    python bench/generate.py --config configs/gpt2-small.toml  # on a GPU (bf16 autocast)
    python bench/generate.py --kinds mlp,swiglu,quadratic,kan --new-tokens 256

Random weights (speed does not depend on them), greedy decoding, batch 1 by default. Without
the cache every step recomputes the whole context, so its cost grows with the sequence; with
it each step feeds one token. The context is widened, if needed, to fit prompt + new tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

from quadgpt.config import ConfigError, load_config, split_config_args
from quadgpt.model import GPT
from quadgpt.sample_cli import autocast_dtype, resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generate(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool, repeats: int, dtype) -> float:
    """Median seconds of ``repeats`` greedy generations of ``new_tokens`` (after one warm-up)."""
    device = prompt.device
    times = []
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        model.generate(prompt, min(8, new_tokens), temperature=0, use_cache=use_cache)  # warm-up
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
            sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Model overrides: --model.n_layer=6 ...")
    parser.add_argument("--kinds", default="", help="comma-separated FFN kinds (default: the config's)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    try:
        config_path, overrides, rest = split_config_args(list(sys.argv[1:] if argv is None else argv))
        args = parser.parse_args(rest)
        config = load_config(config_path or "configs/tiny.toml", overrides)
        device = resolve_device(args.device)
    except (ConfigError, ValueError) as err:
        print(f"bench/generate.py: {err}", file=sys.stderr)
        return 2
    dtype = autocast_dtype(args.dtype, device)
    cfg = config.model
    needed = args.prompt_tokens + args.new_tokens
    if cfg.block_size < needed:
        print(f"(block_size {cfg.block_size} -> {needed} to fit {args.prompt_tokens} + {args.new_tokens} tokens)")
        cfg = dataclasses.replace(cfg, block_size=needed)
    kinds = args.kinds.split(",") if args.kinds else [cfg.ffn.kind]
    print(
        f"device={device} dtype={args.dtype} n_layer={cfg.n_layer} n_embd={cfg.n_embd} batch={args.batch} "
        f"prompt={args.prompt_tokens} new={args.new_tokens} threads={torch.get_num_threads()}"
    )
    print(f"{'ffn':<10} {'params':>12} {'cached tok/s':>13} {'uncached tok/s':>15} {'speed-up':>9}")
    torch.manual_seed(0)
    for kind in kinds:
        kind_cfg = dataclasses.replace(cfg, ffn=dataclasses.replace(cfg.ffn, kind=kind))
        model = GPT(kind_cfg).to(device).eval()
        prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_tokens), device=device)
        tokens = args.batch * args.new_tokens
        cached = tokens / time_generate(model, prompt, args.new_tokens, True, args.repeats, dtype)
        uncached = tokens / time_generate(model, prompt, args.new_tokens, False, args.repeats, dtype)
        print(f"{kind:<10} {model.num_params(non_embedding=False):>12,} {cached:>13.1f} {uncached:>15.1f} {cached / uncached:>8.2f}x")
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
