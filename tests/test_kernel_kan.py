"""The fused Triton KAN layer against ``kan_layer_reference``: values and every gradient.

Without a GPU the kernels run on the Triton CPU interpreter (``TRITON_INTERPRET=1``, set below
before the kernel module is imported) at tiny, ragged shapes: 16-wide blocks, so every shape
spans several tiles with a partial last one. The ``gpu`` tests repeat the check at larger shapes,
in bf16 under autocast, and check that no basis-sized tensor is ever allocated. Run them with::

    python -m pytest -q tests/test_kernel_kan.py -m gpu

Error measure: ``||kernel - ref|| / ||ref||`` (Frobenius) per tensor, the reference evaluated in
float64 on the very same (already rounded) inputs, so only the kernel's own rounding counts.
Tolerances per dtype of the matmul operands (measured errors are 3-30x below them):

- float32: 1e-5 (interpreter: ~3e-7; on a GPU fp32 dots run as IEEE unless TF32 is enabled).
- float16: 3e-3 (interpreter: ~3e-4; the bases are rounded to fp16, 2^-11, before the dot).
- bfloat16: 2e-2 (GPU only: bases and outputs rounded to bf16, 2^-8; the interpreter computes
  bf16 dots wrongly, so it is not tested there).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # before Triton is imported: it reads the variable then
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402

from quadgpt.config import FFNConfig  # noqa: E402
from quadgpt.ffn.kan import KANFFN, kan_layer_reference  # noqa: E402
from quadgpt.kernels.common import interpreting  # noqa: E402
from quadgpt.kernels.kan import kan_layer  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}

pytestmark = [
    pytest.mark.skipif(
        DEVICE == "cpu" and not interpreting(), reason="needs a GPU or TRITON_INTERPRET=1 (set by default here)"
    ),
    # the interpreter's numpy sigmoid overflows exp() for |x| ~ 1e4 on the way to the right 0 / 1
    pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return ((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def make_inputs(shape, in_features, out_features, n_bases, base, dtype=torch.float32, device=DEVICE):
    """Inputs spread well past the grid (std 2, so tanh saturates often), plus exact extremes:
    +-30 and +-1e4 (tanh == +-1 exactly, the grid's closed ends) and 0 (a knot for even G)."""
    x = 2.0 * torch.randn(*shape, in_features, device=device)
    if x.numel():
        x.view(-1, in_features)[0, :5] = torch.tensor([30.0, -30.0, 1e4, -1e4, 0.0])
    spline = 0.3 * torch.randn(out_features, in_features, n_bases, device=device)
    base_weight = 0.3 * torch.randn(out_features, in_features, device=device) if base else None
    return x.to(dtype), spline.to(dtype), None if base_weight is None else base_weight.to(dtype)


def check_against_reference(x, spline, base_weight, grid_size, order, tolerance, autocast_dtype=None):
    """Kernel (optionally under autocast) vs the float64 reference on the same inputs: output and
    the gradient of every input that requires one, for a random upstream gradient."""
    ours = [None if t is None else t.detach().clone().requires_grad_(t.requires_grad) for t in (x, spline, base_weight)]
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        y = kan_layer(*ours, grid_size, order)
    matmul_dtype = autocast_dtype or x.dtype
    assert y.dtype == matmul_dtype and y.shape == (*x.shape[:-1], spline.shape[0])
    # the reference sees what the kernel sees: weights rounded to the matmul dtype, x as it is
    # (the kernel computes the bases from x in fp32, whatever the matmul dtype)
    ref = [
        None if t is None else t.detach().to(matmul_dtype if i else t.dtype).double().requires_grad_(t.requires_grad)
        for i, t in enumerate(ours)
    ]
    y_ref = kan_layer_reference(*ref, grid_size, order)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad.double())
    assert relative_error(y, y_ref) < tolerance, "output"
    for name, mine, theirs in zip(("x", "spline_weight", "base_weight"), ours, ref):
        if mine is None:
            continue
        if not mine.requires_grad:
            assert mine.grad is None, f"{name} is frozen but got a gradient"
            continue
        assert mine.grad.dtype == mine.dtype, name
        if theirs.grad is None:  # order 0 without base: y is piecewise constant in x
            assert mine.grad.abs().max() == 0, name
            continue
        assert relative_error(mine.grad, theirs.grad) < tolerance, name


@pytest.mark.parametrize(
    "grid_size, order, base",
    [(5, 3, True), (5, 3, False), (1, 3, True), (8, 2, False), (3, 1, True), (4, 0, True), (2, 0, False)],
)
def test_matches_reference_fp32(grid_size, order, base):
    x, spline, base_weight = make_inputs((2, 9), 37, 23, grid_size + order, base)
    for t in (x, spline, base_weight):
        if t is not None:
            t.requires_grad_(True)
    check_against_reference(x, spline, base_weight, grid_size, order, TOLERANCE[torch.float32])


def test_frozen_base_gets_no_gradient():
    """``freeze_base``: the base weight has requires_grad=False; the rest still matches."""
    x, spline, base_weight = make_inputs((19,), 21, 33, 8, base=True)
    x.requires_grad_(True)
    spline.requires_grad_(True)
    check_against_reference(x, spline, base_weight, 5, 3, TOLERANCE[torch.float32])


def test_non_contiguous_input_and_weights_only_grad():
    x, spline, base_weight = make_inputs((17,), 20, 18, 8, base=True)
    x_t = x.t().contiguous().t()  # same values, column-major: the layer must not assume row-major
    spline.requires_grad_(True)
    base_weight.requires_grad_(True)
    check_against_reference(x_t, spline, base_weight, 5, 3, TOLERANCE[torch.float32])


def test_matches_reference_fp16():
    x, spline, base_weight = make_inputs((3, 7), 29, 22, 8, base=True, dtype=torch.float16)
    for t in (x, spline, base_weight):
        t.requires_grad_(True)
    check_against_reference(x, spline, base_weight, 5, 3, TOLERANCE[torch.float16])


def test_autocast_casts_like_a_matmul():
    """fp32 x and weights under fp16 autocast: fp16 output, fp32 gradients for fp32 inputs."""
    x, spline, base_weight = make_inputs((20,), 18, 24, 8, base=True)
    for t in (x, spline, base_weight):
        t.requires_grad_(True)
    check_against_reference(x, spline, base_weight, 5, 3, TOLERANCE[torch.float16], autocast_dtype=torch.float16)


def test_saves_no_basis_sized_tensor():
    """Autograd keeps x and the parameters only: nothing of size N x in x (G+k)."""
    x, spline, base_weight = make_inputs((40,), 24, 16, 8, base=True)
    spline.requires_grad_(True)
    saved: list[int] = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        kan_layer(x, spline, base_weight, 5, 3)
    assert saved and max(saved) <= max(x.numel(), spline.numel())
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        kan_layer_reference(x, spline, base_weight, 5, 3)
    assert max(saved) >= x.numel() * 8, "the check above would not see a materialised basis tensor"


def test_empty_batch():
    x, spline, base_weight = make_inputs((0,), 12, 10, 8, base=True)
    for t in (x, spline, base_weight):
        t.requires_grad_(True)
    y = kan_layer(x, spline, base_weight, 5, 3)
    assert y.shape == (0, 10)
    y.sum().backward()
    assert x.grad.shape == x.shape and spline.grad.abs().max() == 0 and base_weight.grad.abs().max() == 0


def test_kan_ffn_uses_kernel_and_agrees_with_torch():
    """``KANFFN(kernel="triton")`` (through ``use_triton_kernel``) equals ``kernel="torch"``."""
    torch.manual_seed(1)
    fused = KANFFN(16, FFNConfig(kind="kan", hidden=24, kernel="triton", freeze_base=True)).to(DEVICE)
    fused.init_weights(0.3, 0.3)
    plain = KANFFN(16, FFNConfig(kind="kan", hidden=24, kernel="torch", freeze_base=True)).to(DEVICE)
    plain.load_state_dict(fused.state_dict())
    x = 2.0 * torch.randn(2, 5, 16, device=DEVICE)
    y_fused, y_plain = fused(x), plain(x)
    y_fused.square().sum().backward()
    y_plain.square().sum().backward()
    assert relative_error(y_fused, y_plain) < TOLERANCE[torch.float32]
    for (name, p_fused), p_plain in zip(fused.named_parameters(), plain.parameters()):
        if p_fused.requires_grad:
            assert relative_error(p_fused.grad, p_plain.grad) < 1e-4, name
        else:
            assert p_fused.grad is None and p_plain.grad is None, name


def test_custom_ops_pass_opcheck():
    """Schema, fake (shape-only) implementations and autograd registration of the three ops,
    which ``torch.compile`` relies on to trace around the kernels."""
    import quadgpt.kernels.kan as kan

    x, spline, base_weight = make_inputs((9,), 12, 7, 8, base=True)
    g = torch.randn(9, 7, device=DEVICE)
    for t in (x, spline, base_weight):
        t.requires_grad_(True)
    checks = [
        (kan._forward_op, (x, spline, base_weight, 5, 3, torch.float32)),
        (kan._input_grad_op, (x.detach(), spline.detach(), None, g, 5, 3)),
        (kan._weight_grad_op, (x.detach(), g, 5, 3, False, torch.float32)),
        (kan._weight_grad_op, (x.detach(), g, 5, 3, True, torch.float32)),
    ]
    for op, args in checks:
        results = torch.library.opcheck(op, args)
        assert set(results.values()) == {"SUCCESS"}, (op, results)


def test_compiles_into_one_graph():
    """``torch.compile(fullgraph=True)`` traces the FFN around the kernels without a graph break
    (AOT autograd only: the interpreter cannot run Inductor-generated code) and agrees with eager."""
    ffn = KANFFN(16, FFNConfig(kind="kan", hidden=24, kernel="triton")).to(DEVICE)
    ffn.init_weights(0.3, 0.3)
    x = 2.0 * torch.randn(2, 5, 16, device=DEVICE)
    torch.compile(ffn, backend="aot_eager", fullgraph=True)(x).square().sum().backward()
    compiled_grads = [p.grad.clone() for p in ffn.parameters()]
    ffn.zero_grad()
    ffn(x).square().sum().backward()
    for compiled, eager in zip(compiled_grads, (p.grad for p in ffn.parameters())):
        assert relative_error(compiled, eager) < 1e-6


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(order=4), "spline_order = 4"),
        (dict(grid_size=0), "grid_size = 0"),
        (dict(n_bases=7), r"spline_weight has shape \(3, 4, 7\)"),
        (dict(in_features=5), "last dim must be in = 4"),
        (dict(base_shape=(4, 3)), r"base_weight has shape \(4, 3\)"),
        (dict(base_dtype=torch.float16), "x is torch.float32 but base_weight is torch.float16"),
        (dict(x_dtype=torch.float64), "x has dtype torch.float64"),
    ],
)
def test_rejects_bad_input_with_a_clear_error(args, match):
    grid_size, order = args.get("grid_size", 5), args.get("order", 3)
    x = torch.randn(2, args.get("in_features", 4), dtype=args.get("x_dtype", torch.float32))
    spline = torch.randn(3, 4, args.get("n_bases", grid_size + order))
    base_weight = torch.randn(*args.get("base_shape", (3, 4)), dtype=args.get("base_dtype", torch.float32))
    with pytest.raises((ValueError, TypeError), match=match):
        kan_layer(x, spline, base_weight, grid_size, order)


# --- GPU code generation, checked on any machine -------------------------------------------------

HOPPER_SHARED_MEMORY = 227 * 1024  # per block, on an H100
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def compile_preferred_configs_for_hopper() -> dict[str, dict[str, int]]:
    """Compile each kernel's first Hopper autotune config in bf16 for sm90 (ptxas runs without a
    GPU): kernel -> shared memory bytes and the per-thread stack ptxas spilled registers to."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import quadgpt.kernels.kan as kan

    common = dict(GRID_SIZE=5, ORDER=3, DOT_PRECISION="tf32")
    cases = {
        "forward": (kan._kan_fwd_kernel, kan._FWD_HOPPER[0], dict(common, HAS_BASE=True)),
        "input_grad": (kan._kan_bwd_dx_kernel, kan._DX_HOPPER[0], dict(common, HAS_BASE=True, BASES=8)),
        "spline_grad": (kan._kan_bwd_dw_kernel, kan._DW_HOPPER[0], dict(common, BASES=8)),
        "base_grad": (kan._kan_bwd_dw_kernel, kan._DW_HOPPER[0], dict(common, BASES=0)),
    }
    results = {}
    for name, (kernel, config, constants) in cases.items():
        fn = kernel.fn
        constants = dict(constants, **config.kwargs)
        signature = {arg: "*bf16" if arg.endswith("_ptr") else "i32" for arg in fn.arg_names}
        signature.update(dw_ptr="*fp32", **dict.fromkeys(constants, "constexpr"))
        signature = {arg: signature[arg] for arg in fn.arg_names}
        # what a launch at d = 768 specialises: every pointer, size and stride divisible by 16
        aligned = {(i,): [["tt.divisibility", 16]] for i, arg in enumerate(fn.arg_names) if arg not in constants}
        compiled = triton.compile(
            ASTSource(fn, signature, constexprs=constants, attrs=aligned),
            target=GPUTarget("cuda", 90, 32),
            options=dict(num_warps=config.num_warps, num_stages=config.num_stages),
        )
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(compiled.asm["cubin"])
            cubin.flush()
            usage = subprocess.run([str(CUOBJDUMP), "-res-usage", cubin.name], capture_output=True, text=True).stdout
        results[name] = dict(shared=compiled.metadata.shared, stack=int(re.search(r"STACK:(\d+)", usage).group(1)))
    return results


@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="Triton's bundled NVIDIA tools are missing")
def test_kernels_compile_for_hopper_within_shared_memory_and_without_spills():
    """Catches GPU-only failures in CI: a kernel that the interpreter runs but the compiler
    rejects, a preferred config that needs more shared memory than an H100 has, or one that
    spills registers (which silently costs much of the speed). Runs in a subprocess because the
    interpreter, once on in this process, replaces the compiler."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name, usage in json.loads(run.stdout.splitlines()[-1]).items():
        assert 0 < usage["shared"] <= HOPPER_SHARED_MEMORY, (name, usage)
        assert usage["stack"] == 0, (name, usage)


# --- GPU: larger ragged shapes, bf16 autocast, memory ---------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("base, frozen", [(True, False), (True, True), (False, False)])
def test_gpu_matches_reference(dtype, base, frozen):
    x, spline, base_weight = make_inputs((3, 333), 200, 300, 8, base=base)
    x.requires_grad_(True)
    spline.requires_grad_(True)
    if base:
        base_weight.requires_grad_(not frozen)
    autocast = None if dtype == torch.float32 else dtype  # fp32 params, low-precision x: training
    check_against_reference(x.to(dtype) if autocast else x, spline, base_weight, 5, 3, TOLERANCE[dtype], autocast)


@pytest.mark.gpu
def test_gpu_inductor_compiled_ffn_matches_eager():
    """The default ``torch.compile`` (Inductor) around the kernels, in bf16 autocast as trained."""
    ffn = KANFFN(256, FFNConfig(kind="kan", kernel="triton")).cuda()
    ffn.init_weights(0.02, 0.02)
    x = torch.randn(4, 300, 256, device="cuda")

    def loss_and_grads(module):
        ffn.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = module(x)
        y.float().square().sum().backward()
        return [y.float()] + [p.grad.clone() for p in ffn.parameters()]

    for compiled, eager in zip(loss_and_grads(torch.compile(ffn)), loss_and_grads(ffn)):
        assert relative_error(compiled, eager) < TOLERANCE[torch.bfloat16]


@pytest.mark.gpu
def test_gpu_peak_memory_has_no_basis_tensor():
    """Forward + backward at N = 8192, d = 768 -> 344 in bf16: the peak above the live inputs
    stays below the size of the basis tensor the reference materialises (N x d x 8 x 2 bytes)."""
    n, d_in, d_out = 8192, 768, 344
    x = torch.randn(n, d_in, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    spline = (0.02 * torch.randn(d_out, d_in, 8, device="cuda")).requires_grad_(True)
    base_weight = (0.02 * torch.randn(d_out, d_in, device="cuda")).requires_grad_(True)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = kan_layer(x, spline, base_weight, 5, 3)
        y.backward(torch.ones_like(y))

    step()  # autotunes every kernel outside the measurement
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    basis_bytes = n * d_in * 8 * 2
    assert torch.cuda.max_memory_allocated() - start < basis_bytes


if __name__ == "__main__":  # the compile check's subprocess
    print(json.dumps(compile_preferred_configs_for_hopper()))
