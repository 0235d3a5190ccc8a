"""The Triton quadratic hidden layer against ``quadratic_hidden_reference``: output and the
gradient of every input (x, u, v, w, b).

Without a GPU the kernels run on the Triton CPU interpreter (``TRITON_INTERPRET=1``, set below
before the kernel module is imported) at tiny shapes. The interpreter launches 16 x 16 x 16
blocks, so N, d and h of 14..48 span one to three tiles, most with a partial last one. Since the
interpreter never runs Triton's compiler, one test also compiles both kernels for sm90 and sm80
ahead of time. The ``gpu`` tests repeat the check at larger ragged shapes, in fp16/bf16 under
autocast and through Inductor, and check the saved-activation memory. On a CUDA machine, this
runs everything (``-m gpu`` for the GPU tests alone)::

    python -m pytest -q tests/test_kernel_quadratic.py

Error measure: ``||kernel - ref|| / ||ref||`` (Frobenius) per tensor, the reference evaluated in
float64 on the very same inputs rounded to the dtype the kernel's dots see, so only the kernel's
own rounding counts. Tolerances per dtype:

- float32: 1e-5 (interpreter: ~3e-7; on a GPU fp32 dots run as IEEE fp32 unless PyTorch's
  ``allow_tf32`` is on, and the tests turn it off).
- float16: 3e-3 (interpreter: ~3e-4; the output and the backward's ``g * xv`` products are
  rounded to fp16, 2^-11, on the way).
- bfloat16: 2e-2 (same roundings at 2^-8; GPU only: the interpreter computes bf16 wrongly).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import quadgpt.kernels.quadratic as kernel_module  # noqa: E402
from quadgpt.config import FFNConfig  # noqa: E402
from quadgpt.ffn.quadratic import QuadraticFFN, quadratic_hidden_reference  # noqa: E402
from quadgpt.kernels.common import interpreting  # noqa: E402
from quadgpt.kernels.quadratic import quadratic_hidden  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
NAMES = ("x", "u", "v", "w", "b")

pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not interpreting(), reason="needs a GPU or TRITON_INTERPRET=1 (set by default here)"
)


@pytest.fixture(autouse=True)
def _ieee_fp32_matmuls():
    """fp32 tolerances assume IEEE fp32 dots in the kernel and in cuBLAS."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return ((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def make_inputs(lead, d, hidden, rank, linear, bias, dtype=torch.float32, device=DEVICE):
    """x ~ N(0, 1) like a LayerNorm output; factors scaled so that x.u ~ N(0, 1) and every term
    of h is of order one (an error in any one of them shows)."""
    scale = d**-0.5
    x = torch.randn(*lead, d, device=device)
    u = scale * torch.randn(rank, hidden, d, device=device)
    v = scale * torch.randn(rank, hidden, d, device=device)
    w = scale * torch.randn(hidden, d, device=device) if linear else None
    b = torch.randn(hidden, device=device) if bias else None
    return [t.to(dtype) if t is not None else None for t in (x, u, v, w, b)]


def check_against_reference(inputs, tolerance, autocast_dtype=None, requires_grad=NAMES):
    """Kernel (optionally under autocast) vs the float64 reference on the same inputs: the output
    and, for a random upstream gradient, the gradient of each input named in ``requires_grad``."""
    ours = [
        t.detach().clone().requires_grad_(name in requires_grad) if t is not None else None
        for name, t in zip(NAMES, inputs)
    ]
    with torch.autocast(ours[0].device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        h = quadratic_hidden(*ours)
    dot_dtype = autocast_dtype or ours[0].dtype
    assert h.dtype == dot_dtype
    assert h.shape == (*ours[0].shape[:-1], ours[1].shape[1])
    ref = [t.detach().to(dot_dtype).double().requires_grad_(t.requires_grad) if t is not None else None for t in ours]
    h_ref = quadratic_hidden_reference(*ref)
    grad = torch.randn_like(h)
    h.backward(grad)
    h_ref.backward(grad.double())
    errors = {"h": relative_error(h, h_ref)}
    for name, mine, theirs in zip(NAMES, ours, ref):
        if mine is None:
            continue
        if not mine.requires_grad:
            assert mine.grad is None, name
            continue
        assert mine.grad.dtype == mine.dtype and mine.grad.shape == mine.shape, name
        errors[name] = relative_error(mine.grad, theirs.grad)
    bad = {name: err for name, err in errors.items() if not err < tolerance}
    assert not bad, f"relative errors above {tolerance}: {bad}"


# --- CPU interpreter: tiny shapes, every code path ------------------------------------------------


@pytest.mark.parametrize(
    "lead, d, hidden, rank, linear, bias",
    [
        ((2, 7), 24, 20, 1, True, True),  # the default FFN: rank 1, linear term and bias
        ((37,), 48, 40, 2, False, True),  # three tiles in every dimension; last row/column tile partial
        ((3, 5), 33, 17, 3, True, False),  # d and h not multiples of anything
        ((2, 16), 16, 32, 1, False, False),  # exact multiples of the block: no masking at all
    ],
)
def test_matches_reference_fp32(lead, d, hidden, rank, linear, bias):
    check_against_reference(make_inputs(lead, d, hidden, rank, linear, bias), TOLERANCE[torch.float32])


def test_matches_reference_fp16():
    inputs = make_inputs((3, 9), 40, 36, 2, True, True, dtype=torch.float16)
    check_against_reference(inputs, TOLERANCE[torch.float16])


@pytest.mark.skipif(DEVICE == "cuda", reason="the GPU variant is test_gpu_matches_reference")
def test_autocast_casts_like_a_matmul():
    """fp32 parameters, fp32 x under (CPU, fp16) autocast: the kernel runs in fp16, returns fp16,
    and the fp32 parameters get fp32 gradients, as they would through a Linear."""
    check_against_reference(make_inputs((21,), 32, 24, 1, True, True), TOLERANCE[torch.float16], torch.float16)


@pytest.mark.parametrize("requires_grad", [("x",), ("u", "v", "w", "b"), ("v", "b")])
def test_gradient_subsets(requires_grad):
    """Frozen inputs get no gradient and the others stay right (each backward branch is taken)."""
    inputs = make_inputs((19,), 24, 20, 1, True, True)
    check_against_reference(inputs, TOLERANCE[torch.float32], requires_grad=requires_grad)


def test_strided_input_and_broadcast_gradient():
    """A column-major x and the stride-0 upstream gradient of ``h.sum()``."""
    x, u, v, w, b = make_inputs((18,), 20, 17, 1, True, True)
    x = x.t().contiguous().t().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    quadratic_hidden(x, u, v, w, b).sum().backward()
    quadratic_hidden_reference(x_ref, u, v, w, b).sum().backward()
    assert relative_error(x.grad, x_ref.grad) < TOLERANCE[torch.float32]


def test_empty_input():
    x, u, v, w, b = make_inputs((0, 3), 16, 16, 1, True, True)
    x.requires_grad_(True)
    u.requires_grad_(True)
    h = quadratic_hidden(x, u, v, w, b)
    assert h.shape == (0, 3, 16)
    h.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(u.grad) == 0


def test_quadratic_ffn_uses_the_kernel(monkeypatch):
    """``QuadraticFFN(kernel="triton")`` calls the kernel and equals ``kernel="torch"``."""
    calls = []

    def counting(*args):
        calls.append(1)
        return quadratic_hidden(*args)

    monkeypatch.setattr(kernel_module, "quadratic_hidden", counting)
    fused = QuadraticFFN(24, FFNConfig(kind="quadratic", hidden=20, rank=2, kernel="triton")).to(DEVICE)
    fused.init_weights(0.2, 0.2)
    plain = QuadraticFFN(24, FFNConfig(kind="quadratic", hidden=20, rank=2, kernel="torch")).to(DEVICE)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 9, 24, device=DEVICE)
    y_fused, y_plain = fused(x), plain(x)
    assert calls, "kernel='triton' did not reach quadgpt.kernels.quadratic"
    assert relative_error(y_fused, y_plain) < TOLERANCE[torch.float32]
    y_fused.square().sum().backward()
    y_plain.square().sum().backward()
    for (name, p_fused), p_plain in zip(fused.named_parameters(), plain.parameters()):
        assert relative_error(p_fused.grad, p_plain.grad) < TOLERANCE[torch.float32], name


def test_compiles_as_one_graph():
    """Under ``torch.compile(fullgraph=True)`` the kernels are opaque custom ops: no graph break,
    and the compiled forward and backward equal the eager ones."""
    ffn = QuadraticFFN(24, FFNConfig(kind="quadratic", hidden=20, kernel="triton")).to(DEVICE)
    ffn.init_weights(0.2, 0.2)
    x = torch.randn(3, 7, 24, device=DEVICE)
    outputs = []
    for runner in (ffn, torch.compile(ffn, backend="aot_eager", fullgraph=True)):
        ffn.zero_grad()
        y = runner(x)
        y.square().sum().backward()
        outputs.append([y.detach()] + [p.grad.clone() for p in ffn.parameters()])
    for eager, compiled in zip(*outputs):
        assert relative_error(compiled, eager) < TOLERANCE[torch.float32]


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda t: {**t, "x": t["x"][..., :-1]}, ValueError, r"x must be \[\.\.\., 16\]"),
        (lambda t: {**t, "v": t["v"][:, :-1]}, ValueError, "u and v must both be"),
        (lambda t: {**t, "w": t["w"].t()}, ValueError, r"w must be \[hidden, d\]"),
        (lambda t: {**t, "b": t["b"][:-1]}, ValueError, r"b must be \[hidden\]"),
        (lambda t: {**t, "u": t["u"].half()}, TypeError, "u is torch.float16 but x is torch.float32"),
        (lambda t: {k: v.double() for k, v in t.items()}, TypeError, "x has dtype torch.float64"),
        (lambda t: {**t, "b": t["b"].to("meta")}, ValueError, "b is on meta"),
    ],
)
def test_bad_inputs_are_named(change, error, match):
    inputs = dict(zip(NAMES, make_inputs((4,), 16, 8, 1, True, True)))
    with pytest.raises(error, match=match):
        quadratic_hidden(**change(inputs))


# Compiles both kernels ahead of time for a GPU target: the interpreter never runs Triton's
# compiler, so this is what catches code that interprets but does not compile. Run in a fresh
# process because under TRITON_INTERPRET=1 the kernels in this one are interpreter objects.
_COMPILE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import quadgpt.kernels.quadratic as q

for arch, configs in ((90, q._HOPPER), (80, q._AMPERE)):
    config = configs[0]
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    kernels = [
        (q._forward_kernel, {"RANK": 2, "HAS_W": True, "HAS_B": True}),
        (q._backward_products_kernel, {"RANK": 2, "HAS_W": True}),
    ]
    for kernel, flags in kernels:
        fn = kernel.fn
        ints = [n for n in fn.arg_names if n in ("N", "H", "D") or n.startswith("stride")]
        signature = {n: "*bf16" if n.endswith("_ptr") else "i32" if n in ints else "constexpr" for n in fn.arg_names}
        aligned = [n for n in fn.arg_names if n.endswith("_ptr") or (n in ints and n != "N")]
        attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
        source = ASTSource(fn, signature, {**config.kwargs, **flags, "PRECISION": "tf32"}, attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
        ptx = compiled.asm["ptx"]
        print(arch, fn.__name__, compiled.metadata.shared, "wgmma" in ptx, "mma.sync" in ptx)
"""


def test_kernels_compile_for_gpus_with_tensor_cores():
    """sm90 (Hopper) and sm80 (Ampere), bf16, the first autotune config of each: both kernels
    compile, fit in shared memory, and their dots become tensor-core instructions (wgmma on
    Hopper, mma on Ampere)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    for line in lines:
        arch, _, shared, wgmma, mma = line.split()
        assert int(shared) <= {"90": 227 * 1024, "80": 163 * 1024}[arch], line
        assert (wgmma if arch == "90" else mma) == "True", line


def test_ffn_benchmark_runs(capsys, monkeypatch):
    """``bench/ffn.py`` end to end at toy sizes: one table row per kind and path it can run."""
    spec = importlib.util.spec_from_file_location("bench_ffn", REPO_ROOT / "bench" / "ffn.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_ffn", bench)
    spec.loader.exec_module(bench)
    argv = ["--device", DEVICE, "--widths", "16", "--tokens", "24", "--kinds", "mlp,quadratic"]
    assert bench.main(argv + ["--variants", "eager,triton", "--repeats", "1", "--ceiling-size", "32"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    paths = [(row[0].strip(), row[4].strip()) for row in rows[1:]]
    assert paths == [("mlp", "eager"), ("quadratic", "eager"), ("quadratic", "triton")]
    assert all(float(row[5]) > 0 for row in rows[1:])


# --- GPU: larger ragged shapes, fp16/bf16 autocast, memory ----------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rank, linear, bias", [(1, True, True), (2, False, True), (3, True, False)])
def test_gpu_matches_reference(dtype, rank, linear, bias):
    inputs = make_inputs((3, 333), 200, 300, rank, linear, bias)
    autocast = None if dtype == torch.float32 else dtype  # fp32 parameters, as in training
    check_against_reference(inputs, TOLERANCE[dtype], autocast)


@pytest.mark.gpu
def test_gpu_inductor_compiled_ffn_matches_reference():
    """The training configuration: the FFN compiled by Inductor, bf16 autocast, fp32 parameters."""
    cfg = FFNConfig(kind="quadratic", hidden=300, rank=2, kernel="triton")
    fused = QuadraticFFN(200, cfg).cuda()
    fused.init_weights(0.05, 0.05)
    plain = QuadraticFFN(200, dataclasses.replace(cfg, kernel="torch")).cuda().double()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 250, 200, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = torch.compile(fused, fullgraph=True)(x)
    y_ref = plain(x.double())
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad.double())
    assert relative_error(y, y_ref) < TOLERANCE[torch.bfloat16]
    for (name, p), p_ref in zip(fused.named_parameters(), plain.parameters()):
        assert relative_error(p.grad, p_ref.grad) < TOLERANCE[torch.bfloat16], name


@pytest.mark.gpu
def test_gpu_half_parameters_without_autocast():
    inputs = make_inputs((1000,), 768, 1536, 1, True, True, dtype=torch.bfloat16)
    check_against_reference(inputs, TOLERANCE[torch.bfloat16])


@pytest.mark.gpu
def test_gpu_saved_activations_at_most_half_the_reference():
    """N = 16384, d = 768, h = 1536, bf16 autocast: the memory a forward leaves for its backward
    (beyond the output) is at most half the reference's, which keeps x U and x V; ours keeps x."""
    x_bf16 = torch.randn(16384, 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    u, v = ((0.02 * torch.randn(1, 1536, 768, device="cuda")).requires_grad_(True) for _ in range(2))
    w = (0.02 * torch.randn(1536, 768, device="cuda")).requires_grad_(True)
    b = torch.zeros(1536, device="cuda", requires_grad=True)

    def saved_bytes(fn) -> int:
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = fn(x_bf16, u, v, w, b)
        torch.cuda.synchronize()
        saved = torch.cuda.memory_allocated() - start - h.untyped_storage().nbytes()
        h.sum().backward()
        return saved

    saved_bytes(quadratic_hidden)  # autotune outside the measurement
    ours, ref = saved_bytes(quadratic_hidden), saved_bytes(quadratic_hidden_reference)
    assert ours <= 0.5 * ref, f"saved {ours / 2**20:.1f} MiB vs the reference's {ref / 2**20:.1f} MiB"
