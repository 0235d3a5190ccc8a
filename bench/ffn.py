"""FFN forward + backward benchmark for every kind: time, TFLOP/s, share of a matmul ceiling,
memory, and the Triton kernels against ``torch.compile`` of their PyTorch reference.

    python bench/ffn.py                                   # GPU: all kinds, d = 768/1024, N = 4k/16k/64k
    python bench/ffn.py --kinds quadratic --widths 768 --tokens 16384
    python bench/ffn.py --step                            # + gpt2-small training step per kind
    TRITON_INTERPRET=1 python bench/ffn.py --device cpu --widths 32 --tokens 64 \\
        --variants eager,triton                           # CPU smoke run (timings meaningless)

Each FFN is built at the kind's parameter-matched default width and run under bf16 autocast on
fp32 parameters with an fp32 input, as in training (``--dtype`` changes that). Paths
(``--variants``):

- ``compile``: ``ffn.kernel = "torch"`` (the PyTorch reference), wrapped in ``torch.compile``;
- ``triton``: ``ffn.kernel = "triton"``, eager (only the kinds with a Triton path: quadratic, kan);
- ``eager``: ``ffn.kernel = "torch"`` without compilation.

Columns: ``ms`` = median forward + backward time (``triton.testing.do_bench`` on a GPU, the
median of ``--repeats`` timed calls on a CPU); ``TFLOP/s`` = 3 x the module's
``forward_flops_per_token`` x N / time (model FLOPs: a backward that recomputes does not get
credit for it); ``% mm`` = that over a square matmul of ``--ceiling-size`` in the same dtype,
measured in the same run; ``peak MiB`` = peak allocation of one step above what was live before
it; ``saved MiB`` = what the forward leaves for the backward beyond its output; ``x compile`` =
the ``compile`` path's time over this path's (above 1: faster than ``torch.compile``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch

from quadgpt.config import FFNConfig, ModelConfig, load_config
from quadgpt.ffn import FFN, FFN_REGISTRY, build_ffn
from quadgpt.ffn.quadratic import use_triton_kernel
from quadgpt.model import GPT

# Kinds whose FFN module has a Triton path selected by ``ffn.kernel``.
TRITON_KINDS = ("quadratic", "kan")
VARIANTS = ("compile", "triton", "eager")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclasses.dataclass
class Measurement:
    ms: float
    peak: int | None  # bytes; None off CUDA
    saved: int | None


def mib(n_bytes: int | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / 2**20:.0f}"


def time_ms(fn: Callable[[], None], device: torch.device, repeats: int, grads: list[torch.Tensor]) -> float:
    """Median milliseconds of ``fn``, ``grads`` reset to None before each call."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, grad_to_none=grads, return_mode="median")
    times = []
    for _ in range(repeats):
        for t in grads:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def matmul_ceiling_tflops(n: int, dtype: torch.dtype | None, device: torch.device, repeats: int) -> float:
    """TFLOP/s of an ``n x n x n`` matmul in ``dtype`` (fp32 when None): the ceiling to compare with."""
    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    ms = time_ms(lambda: torch.mm(a, b), device, repeats, [])
    return 2 * n**3 / (ms * 1e-3) / 1e12


def measure_step(
    step: Callable[[], torch.Tensor], backward: Callable[[torch.Tensor], None], grads: list[torch.Tensor],
    device: torch.device, repeats: int,
) -> Measurement:  # fmt: skip
    """Time ``backward(step())`` and, on CUDA, its peak and saved-for-backward memory."""

    def run() -> None:
        backward(step())

    run()  # compiles, autotunes
    run()
    peak = saved = None
    if device.type == "cuda":
        for t in grads:
            t.grad = None
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        out = step()
        torch.cuda.synchronize()
        saved = torch.cuda.memory_allocated() - start - out.untyped_storage().nbytes()
        backward(out)
        del out
        for t in grads:
            t.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
    ms = time_ms(run, device, repeats, grads)
    return Measurement(ms, peak, saved)


def ffn_runner(kind: str, d: int, variant: str, device: torch.device, compile_mode: str | None) -> tuple[FFN, Callable]:
    """The FFN module of ``kind`` at width ``d`` and the callable that runs it on ``variant``'s path."""
    module = build_ffn(FFNConfig(kind=kind, kernel="triton" if variant == "triton" else "torch"), d).to(device)
    module.init_weights(0.02, 0.02 / math.sqrt(24))
    runner = torch.compile(module, mode=compile_mode) if variant == "compile" else module
    return module, runner


def bench_ffn(
    kind: str, d: int, tokens: int, variant: str, args: argparse.Namespace, device: torch.device, dtype
) -> tuple[FFN, Measurement]:
    module, runner = ffn_runner(kind, d, variant, device, args.compile_mode)
    x = torch.randn(tokens, d, device=device, requires_grad=True)
    grad_out = torch.randn(tokens, d, device=device, dtype=dtype or torch.float32)
    grads = [x, *module.parameters()]

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return runner(x)

    result = measure_step(step, lambda y: y.backward(grad_out), grads, device, args.repeats)
    return module, result


def skip_reason(kind: str, variant: str, device: torch.device) -> str | None:
    if variant != "triton":
        return None
    if kind not in TRITON_KINDS:
        return "no Triton path"
    try:
        use_triton_kernel("triton", torch.empty(0, device=device))
        __import__(f"quadgpt.kernels.{kind}")
    except (RuntimeError, ImportError) as err:
        return str(err).split(";")[0]
    return None


def run_table(args: argparse.Namespace, device: torch.device, dtype) -> None:
    ceiling = matmul_ceiling_tflops(args.ceiling_size, dtype, device, args.repeats)
    print(f"matmul ceiling: {ceiling:.3g} TFLOP/s ({args.ceiling_size}^3, {args.dtype})\n")
    print("| kind | d | h | N | path | ms | TFLOP/s | % mm | peak MiB | saved MiB | x compile |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d, kind, tokens in itertools.product(args.widths, args.kinds, args.tokens):
        compiled_ms = None
        for variant in args.variants:
            reason = skip_reason(kind, variant, device)
            if reason:
                if kind in TRITON_KINDS:
                    print(f"| {kind} | {d} | | {tokens} | {variant} | skipped: {reason} | | | | | |")
                continue
            module, r = bench_ffn(kind, d, tokens, variant, args, device, dtype)
            tflops = 3 * module.forward_flops_per_token() * tokens / (r.ms * 1e-3) / 1e12
            if variant == "compile":
                compiled_ms = r.ms
            ratio = f"{compiled_ms / r.ms:.2f}" if compiled_ms and variant != "compile" else ""
            print(
                f"| {kind} | {d} | {module.hidden} | {tokens} | {variant} | {r.ms:.3f} | {tflops:.3g} "
                f"| {100 * tflops / ceiling:.0f} | {mib(r.peak)} | {mib(r.saved)} | {ratio} |",
                flush=True,
            )
            del module
            if device.type == "cuda":
                torch.cuda.empty_cache()


def run_training_step(args: argparse.Namespace, device: torch.device, dtype) -> None:
    """GPT forward + backward (no optimizer) for each kind at ``--step-config``, ``ffn.kernel = auto``."""
    base = load_config(args.step_config).model
    tokens = args.step_batch * base.block_size
    results: dict[str, tuple[int, Measurement]] = {}
    for kind in args.kinds:
        cfg: ModelConfig = dataclasses.replace(base, ffn=dataclasses.replace(base.ffn, kind=kind, kernel="auto"))
        model = GPT(cfg).to(device)
        runner = torch.compile(model, mode=args.compile_mode) if args.step_compile else model
        idx = torch.randint(0, cfg.vocab_size, (args.step_batch, cfg.block_size), device=device)

        def step() -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return runner(idx, idx)[1]

        measured = measure_step(step, lambda loss: loss.backward(), list(model.parameters()), device, args.repeats)
        results[kind] = (model.num_params(), measured)
        del model, runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    how = "torch.compile" if args.step_compile else "eager"
    print(f"\ntraining step ({how}): {args.step_config}, {args.step_batch} x {base.block_size} tokens, {args.dtype}")
    print("| kind | params | ms | tokens/s | peak MiB | x mlp |")
    print("|---|---|---|---|---|---|")
    mlp_ms = results["mlp"][1].ms if "mlp" in results else None
    for kind, (params, r) in results.items():
        ratio = f"{mlp_ms / r.ms:.2f}" if mlp_ms else ""
        print(f"| {kind} | {params:,} | {r.ms:.1f} | {tokens / r.ms * 1e3:,.0f} | {mib(r.peak)} | {ratio} |")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(FFN_REGISTRY), help="comma-separated FFN kinds")
    parser.add_argument("--widths", default="768,1024", help="model widths d (gpt2-small 768, gpt2-medium 1024)")
    parser.add_argument("--tokens", default="4096,16384,65536", help="token counts N")
    parser.add_argument("--variants", default="compile,triton", help=f"paths to time: {', '.join(VARIANTS)}")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="autocast dtype; auto: bf16 on CUDA")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls on a CPU (do_bench decides on a GPU)")
    parser.add_argument("--ceiling-size", type=int, default=0, help="matmul ceiling size (default 8192 GPU, 256 CPU)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    parser.add_argument("--step", action="store_true", help="also time a GPT training step per kind")
    parser.add_argument("--step-config", default="configs/gpt2-small.toml")
    parser.add_argument("--step-batch", type=int, default=8)
    parser.add_argument("--step-compile", action="store_true", help="torch.compile the whole GPT in --step")
    parser.add_argument("--no-table", action="store_true", help="skip the per-FFN table (with --step)")
    args = parser.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [k for k in args.kinds if k not in FFN_REGISTRY] + [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown {unknown}; kinds: {', '.join(FFN_REGISTRY)}; variants: {', '.join(VARIANTS)}")
    try:
        args.widths = [int(w) for w in args.widths.split(",")]
        args.tokens = [int(n) for n in args.tokens.split(",")]
    except ValueError:
        parser.error(f"--widths and --tokens take comma-separated integers, got {args.widths!r}, {args.tokens!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.dtype == "auto":
        args.dtype = "bf16" if device.type == "cuda" else "fp32"
    dtype = DTYPES[args.dtype]
    args.ceiling_size = args.ceiling_size or (8192 if device.type == "cuda" else 256)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    mode = args.compile_mode or "default"
    print(f"device: {name}; torch {torch.__version__}; dtype {args.dtype}; torch.compile mode {mode}")
    torch.manual_seed(0)
    if not args.no_table:
        run_table(args, device, dtype)
    if args.step:
        run_training_step(args, device, dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
