"""Fused Triton KAN layer: B-spline bases evaluated in registers inside the matmul, never stored.

``kan_layer`` computes exactly what ``quadgpt.ffn.kan.kan_layer_reference`` computes::

    y[n, o] = sum_i  sum_b C[o, i, b] B_b(tanh x[n, i])  +  Wb[o, i] silu(x[n, i])

The reference (efficient-kan's form) first expands ``x [N, in]`` into bases ``[N, in, G+k]``
and then runs one matmul: at N = 16k, d = 768 that tensor is 8x the activation, and reading it
back dominates the time. Here every kernel reads ``x`` and recomputes the bases of one tile in
registers, so memory holds nothing bigger than ``x``, ``y`` and the weights, in the forward
pass and in the backward pass alike (autograd saves ``x`` and the parameters, nothing else).

Why the bases are cheap to recompute: the grid is uniform (this kernel assumes it; grid update or
extension, if ever wanted, would stay in PyTorch). With knot spacing ``h = 2/G`` and the ``k``
extra knots on each side, ``s = (tanh(x) + 1)/h + k`` is the position in knot units, its interval
is ``j = floor(s)`` and ``t = s - j``. Only bases ``j-k .. j`` are nonzero there, and basis
``j-k+r`` equals the fixed polynomial piece ``N_r(t)`` of the uniform B-spline (for k = 3:
``(1-t)^3/6, (3t^3-6t^2+4)/6, (-3t^3+3t^2+3t+1)/6, t^3/6``). Its slope in ``s`` is the difference
of two order-(k-1) pieces. Orders 0 to 3 are written out below (3 is the FFN default).

Kernels (the spline slices and the SiLU base weight are stacked as ``W [G+k (+1), out, in]``
in the matmul dtype, so the base branch is one more "basis" ``phi = silu(x)``):

- forward, grid (row tiles, out tiles): loop over input tiles; per x tile compute the pieces
  once, then for each basis b ``acc += phi_b(x) @ W[b]^T``; writes ``y`` only.
- input grad, grid (row tiles, in tiles): ``P = g @ [W[0] | ... | W[7]]`` for the tile's inputs
  (up to 8 bases stacked into the columns of one dot, loop over out tiles), then
  ``dx = sum_b P_b * B_b'`` and the chain rule ``(1 - tanh^2)/h``, plus ``(g @ Wb) * silu'(x)``.
- weight grad, grid (in tiles, out tiles, basis groups): ``dW[b] = phi_b(x)^T @ g`` (loop over
  rows), up to 8 bases stacked into the rows of one dot so the pieces are computed once per x
  element. The SiLU branch is a separate launch, skipped when the base weight is frozen or absent.

Precision: bases and SiLU are computed in fp32 from x as it is (whatever its dtype) and rounded
to the matmul dtype; accumulation is fp32. Under autocast the layer treats the weights like a
matmul does (cast to the autocast dtype; the output has that dtype), and each gradient comes
back in its input's own dtype (fp32 weights get fp32 gradients, straight from the accumulators).

Speed (estimated from instruction counts; no GPU was available to measure): per x element and
basis, building the dense operand costs ~8 ALU ops (a compare-select per nonzero piece) against
``2 * BLOCK_OUT`` tensor-core FLOPs, so at 128-wide tiles the forward's elementwise work is of
the same order as its dot on an H100, and ~half the tensor FLOPs multiply a zero basis. Inputs
whose sizes and strides are multiples of 16 compile to vectorised, pipelined loads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import autotune, check_float_dtype, dot_precision, flatten_rows

__all__ = ["kan_layer", "MAX_SPLINE_ORDER"]

MAX_SPLINE_ORDER = 3

_BLOCKS = ("BLOCK_N", "BLOCK_IN", "BLOCK_OUT")


def _configs(*shapes: tuple[int, int, int, int, int]) -> list[triton.Config]:
    """``(block_n, block_in, block_out, warps, stages)`` tuples as Triton configs."""
    return [
        triton.Config(dict(zip(_BLOCKS, shape[:3])), num_warps=shape[3], num_stages=shape[4])
        for shape in shapes
    ]


def _stacked_configs(*shapes: tuple[int, int, int, int, int]) -> list[triton.Config]:
    """``(block_m, block_n, block_out, warps, stages)`` for the kernels that stack ``BASES`` bases
    of ``BLOCK_M / BASES`` inputs along one side of a dot (``BLOCK_M`` inputs for the SiLU branch)."""
    return [
        triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_OUT=o), num_warps=w, num_stages=st)
        for m, n, o, w, st in shapes
    ]


# Blocks of 16 under the interpreter: tiny test shapes then span several tiles, so the masks
# on every ragged edge are exercised (BLOCK_M = 128 stacks 8 bases of 16 inputs).
_INTERPRET_CONFIG = triton.Config(dict.fromkeys(_BLOCKS, 16), num_warps=1, num_stages=1)
_STACKED_INTERPRET_CONFIG = triton.Config(dict(BLOCK_M=128, BLOCK_N=16, BLOCK_OUT=16), num_warps=1, num_stages=1)
_KEY = ["N", "IN", "OUT", "GRID_SIZE", "ORDER", "HAS_BASE"]


# --- per-element math (fp32) -------------------------------------------------------------------


@triton.jit
def _spline_coords(x, GRID_SIZE: tl.constexpr, ORDER: tl.constexpr):
    """tanh(x), the knot interval j of tanh(x) and the offset t in [0, 1) inside it.

    tanh as 2 sigmoid(2x) - 1 saturates to exactly +-1 for large |x| (no inf/inf), like torch's."""
    u = 2.0 * tl.sigmoid(2.0 * x) - 1.0
    s = (u + 1.0) * (GRID_SIZE * 0.5) + ORDER
    j = tl.floor(s)
    return u, j.to(tl.int32), s - j


@triton.jit
def _pieces(t, ORDER: tl.constexpr):
    """The ORDER+1 nonzero bases at offset t: (basis j-ORDER, ..., basis j), zero-padded to 4."""
    zero = tl.zeros_like(t)
    if ORDER == 0:
        p0, p1, p2, p3 = zero + 1.0, zero, zero, zero
    elif ORDER == 1:
        p0, p1, p2, p3 = 1.0 - t, t, zero, zero
    elif ORDER == 2:
        p0 = 0.5 * (1.0 - t) * (1.0 - t)
        p1 = 0.5 + t * (1.0 - t)
        p2 = 0.5 * t * t
        p3 = zero
    else:
        t2 = t * t
        omt = 1.0 - t
        p0 = omt * omt * omt * (1.0 / 6.0)
        p1 = (3.0 * t2 * t - 6.0 * t2 + 4.0) * (1.0 / 6.0)
        p2 = (((-3.0 * t + 3.0) * t + 3.0) * t + 1.0) * (1.0 / 6.0)
        p3 = t2 * t * (1.0 / 6.0)
    return p0, p1, p2, p3


@triton.jit
def _basis_slope(j, b, t, ORDER: tl.constexpr):
    """d/ds of basis b where the interval is j (s in knot units; 0 outside its support).

    The slope of piece r is the difference of adjacent order-(k-1) pieces, a polynomial in t
    whose coefficients are picked by r = b - j + ORDER. Picking coefficients rather than whole
    pieces keeps no per-piece tensor live across the input-grad kernel's loop over b."""
    r = b - j + ORDER
    if ORDER == 0:
        slope = tl.zeros_like(t)
    elif ORDER == 1:  # -1, 1
        slope = tl.where(r == 0, -1.0, tl.where(r == 1, 1.0, 0.0))
    elif ORDER == 2:  # t - 1, 1 - 2t, t
        c0 = tl.where(r == 0, -1.0, tl.where(r == 1, 1.0, 0.0))
        c1 = tl.where(r == 0, 1.0, tl.where(r == 1, -2.0, tl.where(r == 2, 1.0, 0.0)))
        slope = c0 + c1 * t
    else:  # -(1-t)^2/2, (3t^2 - 4t)/2, (-3t^2 + 2t + 1)/2, t^2/2
        c0 = tl.where(r == 0, -0.5, tl.where(r == 2, 0.5, 0.0))
        c1 = tl.where(r == 0, 1.0, tl.where(r == 1, -2.0, tl.where(r == 2, 1.0, 0.0)))
        c2 = tl.where(r == 0, -0.5, tl.where(r == 1, 1.5, tl.where(r == 2, -1.5, tl.where(r == 3, 0.5, 0.0))))
        slope = c0 + (c1 + c2 * t) * t
    return slope


@triton.jit
def _select(j, b, p0, p1, p2, p3, ORDER: tl.constexpr):
    """Basis b's value where the interval is j: piece r = b - j + ORDER, else 0.

    Indices outside 0..G+k-1 (the extra interval at tanh(x) = 1 exactly) are never asked for,
    matching the reference, whose last interval holds only bases below G+k."""
    r = b - j + ORDER
    v = tl.where(r == 0, p0, 0.0)
    if ORDER >= 1:
        v = tl.where(r == 1, p1, v)
    if ORDER >= 2:
        v = tl.where(r == 2, p2, v)
    if ORDER >= 3:
        v = tl.where(r == 3, p3, v)
    return v


@triton.jit
def _grad_times_weight(
    g_rows, row_ok, w_ptr, stride_wo, ri, IN, OUT,
    DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_IN: tl.constexpr, BLOCK_OUT: tl.constexpr,
):  # fmt: skip
    """One [rows, in] tile of g @ W_b (W_b: [out, in] at w_ptr), accumulated over all outputs."""
    p = tl.zeros((BLOCK_N, BLOCK_IN), dtype=tl.float32)
    for o0 in range(0, OUT, BLOCK_OUT):
        ro = o0 + tl.arange(0, BLOCK_OUT)
        g = tl.load(g_rows + ro[None, :], mask=row_ok[:, None] & (ro[None, :] < OUT), other=0.0)
        w_mask = (ro[:, None] < OUT) & (ri[None, :] < IN)
        w = tl.load(w_ptr + ro[:, None] * stride_wo + ri[None, :], mask=w_mask, other=0.0)
        p = tl.dot(g, w, p, input_precision=DOT_PRECISION)
    return p


# --- kernels -------------------------------------------------------------------------------------


# Autotune candidates, each checked by compiling for sm90 / sm80 with ptxas (no GPU needed; the
# test file re-checks the first of each Hopper list): each fits in shared memory and does not
# spill registers in bf16. The forward pipelines the x tile and G+k+1
# weight tiles per stage, so its input tiles are thin; the last config of each list also fits in
# fp32. Configs that do not fit a given GPU are skipped by the autotuner.
_FWD_HOPPER = _configs(
    (128, 16, 128, 8, 3), (128, 16, 128, 8, 4), (128, 16, 256, 8, 2), (128, 32, 64, 8, 3), (64, 16, 128, 4, 3),
    (64, 16, 64, 4, 2),
)
_FWD_AMPERE = _configs((128, 16, 128, 8, 3), (128, 16, 128, 8, 4), (128, 32, 64, 8, 3), (64, 16, 64, 4, 2))


@autotune(
    hopper=_FWD_HOPPER,
    ampere=_FWD_AMPERE,
    interpret=_INTERPRET_CONFIG,
    key=_KEY,
)
@triton.jit
def _kan_fwd_kernel(
    x_ptr, w_ptr, y_ptr,
    N, IN, OUT,
    stride_xn, stride_wb, stride_wo, stride_yn,
    GRID_SIZE: tl.constexpr, ORDER: tl.constexpr, HAS_BASE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_IN: tl.constexpr, BLOCK_OUT: tl.constexpr,
):  # fmt: skip
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ro = tl.program_id(1) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    row_ok = rn < N
    x_rows = x_ptr + rn.to(tl.int64)[:, None] * stride_xn
    acc = tl.zeros((BLOCK_N, BLOCK_OUT), dtype=tl.float32)
    for i0 in range(0, IN, BLOCK_IN):
        ri = i0 + tl.arange(0, BLOCK_IN)
        x = tl.load(x_rows + ri[None, :], mask=row_ok[:, None] & (ri[None, :] < IN), other=0.0)
        xf = x.to(tl.float32)
        _, j, t = _spline_coords(xf, GRID_SIZE, ORDER)
        p0, p1, p2, p3 = _pieces(t, ORDER)
        # W[b] tile read as [in, out]: zero outside the matrix, so padded x columns add nothing
        w_tile = w_ptr + ro[None, :] * stride_wo + ri[:, None]
        w_mask = (ri[:, None] < IN) & (ro[None, :] < OUT)
        for b in tl.static_range(GRID_SIZE + ORDER):
            w = tl.load(w_tile + b * stride_wb, mask=w_mask, other=0.0)
            basis = _select(j, b, p0, p1, p2, p3, ORDER).to(w.dtype)
            acc = tl.dot(basis, w, acc, input_precision=DOT_PRECISION)
        if HAS_BASE:
            w = tl.load(w_tile + (GRID_SIZE + ORDER) * stride_wb, mask=w_mask, other=0.0)
            silu = xf * tl.sigmoid(xf)
            acc = tl.dot(silu.to(w.dtype), w, acc, input_precision=DOT_PRECISION)
    y = y_ptr + rn.to(tl.int64)[:, None] * stride_yn + ro[None, :]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & (ro[None, :] < OUT))


_DX_HOPPER = _stacked_configs((128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (256, 64, 64, 8, 3), (128, 64, 64, 4, 3))
_DX_AMPERE = _stacked_configs((128, 128, 32, 8, 3), (128, 64, 64, 4, 3), (256, 64, 32, 8, 3), (64, 64, 32, 4, 2))


@autotune(
    hopper=_DX_HOPPER,
    ampere=_DX_AMPERE,
    interpret=_STACKED_INTERPRET_CONFIG,
    key=_KEY + ["BASES"],
)
@triton.jit
def _kan_bwd_dx_kernel(
    x_ptr, g_ptr, w_ptr, dx_ptr,
    N, IN, OUT,
    stride_xn, stride_gn, stride_wb, stride_wo, stride_dxn,
    GRID_SIZE: tl.constexpr, ORDER: tl.constexpr, HAS_BASE: tl.constexpr, BASES: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_OUT: tl.constexpr,
):  # fmt: skip
    """``dx = sum_b (g @ W[b]) * B_b'(x) * ds/dx + (g @ Wb) * silu'(x)`` for one tile of dx.

    ``BASES`` bases of ``BLOCK_IN`` inputs are stacked as the columns of one
    ``[rows, out] @ [out, BASES * BLOCK_IN]`` dot (column = basis * BLOCK_IN + input), so each
    g tile loaded feeds a wide dot (per basis, a [rows, BLOCK_IN] tile would re-read g from L2
    G+k times at half the arithmetic intensity). The slopes are applied to the finished product
    and summed over the bases once per group, on a narrow [rows, BLOCK_IN] tile of x."""
    BLOCK_IN: tl.constexpr = BLOCK_M // BASES
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ri = tl.program_id(1) * BLOCK_IN + tl.arange(0, BLOCK_IN)
    row_ok = rn < N
    x_mask = row_ok[:, None] & (ri[None, :] < IN)
    rn64 = rn.to(tl.int64)
    x_tile = x_ptr + rn64[:, None] * stride_xn + ri[None, :]
    _, j, t = _spline_coords(tl.load(x_tile, mask=x_mask, other=0.0).to(tl.float32), GRID_SIZE, ORDER)
    g_rows = g_ptr + rn64[:, None] * stride_gn
    c = tl.arange(0, BLOCK_M)
    c_b, c_i = c // BLOCK_IN, tl.program_id(1) * BLOCK_IN + c % BLOCK_IN
    dx = tl.zeros((BLOCK_N, BLOCK_IN), dtype=tl.float32)  # dy/ds until the chain rule below
    for b0 in range(0, GRID_SIZE + ORDER, BASES):
        w_cols = w_ptr + (b0 + c_b) * stride_wb + c_i
        col_ok = (b0 + c_b < GRID_SIZE + ORDER) & (c_i < IN)
        p = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for o0 in range(0, OUT, BLOCK_OUT):
            ro = o0 + tl.arange(0, BLOCK_OUT)
            g = tl.load(g_rows + ro[None, :], mask=row_ok[:, None] & (ro[None, :] < OUT), other=0.0)
            w_mask = (ro[:, None] < OUT) & col_ok[None, :]
            w = tl.load(w_cols[None, :] + ro[:, None] * stride_wo, mask=w_mask, other=0.0)
            p = tl.dot(g, w, p, input_precision=DOT_PRECISION)
        rb = b0 + tl.arange(0, BASES)
        slopes = _basis_slope(j[:, None, :], rb[None, :, None], t[:, None, :], ORDER)  # [rows, BASES, BLOCK_IN]
        dx += tl.sum(tl.reshape(p, (BLOCK_N, BASES, BLOCK_IN)) * slopes, axis=1)
    x = tl.load(x_tile, mask=x_mask, other=0.0).to(tl.float32)  # reloaded: cheaper than kept live
    u = 2.0 * tl.sigmoid(2.0 * x) - 1.0
    dx *= (1.0 - u * u) * (GRID_SIZE * 0.5)  # ds/dx, with s = (tanh(x) + 1) / h + k
    if HAS_BASE:
        w_base = w_ptr + (GRID_SIZE + ORDER) * stride_wb
        p = _grad_times_weight(
            g_rows, row_ok, w_base, stride_wo, ri, IN, OUT, DOT_PRECISION, BLOCK_N, BLOCK_IN, BLOCK_OUT
        )
        sig = tl.sigmoid(x)
        dx += p * (sig * (1.0 + x * (1.0 - sig)))
    tl.store(dx_ptr + rn64[:, None] * stride_dxn + ri[None, :], dx.to(dx_ptr.dtype.element_ty), mask=x_mask)


_DW_HOPPER = _stacked_configs(
    (128, 64, 128, 8, 3), (128, 64, 256, 8, 3), (256, 64, 128, 8, 3), (128, 128, 128, 8, 3), (64, 64, 128, 4, 4)
)
_DW_AMPERE = _stacked_configs((128, 32, 128, 8, 3), (128, 64, 128, 8, 3), (128, 64, 64, 4, 3), (64, 32, 64, 4, 2))


@autotune(
    hopper=_DW_HOPPER,
    ampere=_DW_AMPERE,
    interpret=_STACKED_INTERPRET_CONFIG,
    key=["N", "IN", "OUT", "GRID_SIZE", "ORDER", "BASES"],
)
@triton.jit
def _kan_bwd_dw_kernel(
    x_ptr, g_ptr, dw_ptr,
    N, IN, OUT,
    stride_xn, stride_gn, stride_dwb, stride_dwo, stride_dwi,
    GRID_SIZE: tl.constexpr, ORDER: tl.constexpr, BASES: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_OUT: tl.constexpr,
):  # fmt: skip
    """``dW[b] = phi_b(x)^T @ g`` for ``BASES`` consecutive bases at once (group program_id(2)),
    or, with ``BASES = 0``, for the SiLU branch.

    The group's bases are stacked along the rows of one ``[BASES * BLOCK_IN, N] @ [N, out]`` dot,
    so the interval and pieces of each x element are computed once per group, not once per
    basis (one basis per program would repeat that elementwise work 8x, which by instruction
    count costs more than the dot itself)."""
    STACK: tl.constexpr = 1 if BASES == 0 else BASES
    BLOCK_IN: tl.constexpr = BLOCK_M // STACK
    ri = tl.program_id(0) * BLOCK_IN + tl.arange(0, BLOCK_IN)
    ro = tl.program_id(1) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    rb = tl.program_id(2) * STACK + tl.arange(0, STACK)  # this group's basis indices
    acc = tl.zeros((BLOCK_M, BLOCK_OUT), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        rn64 = rn.to(tl.int64)
        row_ok = rn < N
        # x read transposed, [in, rows], so phi is already the left operand; padded rows have g = 0
        x_mask = row_ok[None, :] & (ri[:, None] < IN)
        x = tl.load(x_ptr + rn64[None, :] * stride_xn + ri[:, None], mask=x_mask, other=0.0)
        g_mask = row_ok[:, None] & (ro[None, :] < OUT)
        g = tl.load(g_ptr + rn64[:, None] * stride_gn + ro[None, :], mask=g_mask, other=0.0)
        xf = x.to(tl.float32)
        if BASES == 0:
            phi = xf * tl.sigmoid(xf)
        else:
            _, j, t = _spline_coords(xf, GRID_SIZE, ORDER)
            p0, p1, p2, p3 = _pieces(t, ORDER)
            pieces = p0[None, :, :], p1[None, :, :], p2[None, :, :], p3[None, :, :]
            phi = _select(j[None, :, :], rb[:, None, None], *pieces, ORDER)
            phi = tl.reshape(phi, (BLOCK_M, BLOCK_N))
        acc = tl.dot(phi.to(g.dtype), g, acc, input_precision=DOT_PRECISION)
    m = tl.arange(0, BLOCK_M)  # accumulator row m holds basis m // BLOCK_IN of input m % BLOCK_IN
    m_b = tl.program_id(2) * STACK + m // BLOCK_IN
    m_i = tl.program_id(0) * BLOCK_IN + m % BLOCK_IN
    dw = dw_ptr + m_b[:, None] * stride_dwb + m_i[:, None] * stride_dwi + ro[None, :] * stride_dwo
    mask = (m_b < GRID_SIZE + ORDER)[:, None] & (m_i < IN)[:, None] & (ro < OUT)[None, :]
    tl.store(dw, acc.to(dw_ptr.dtype.element_ty), mask=mask)


# --- custom ops and autograd ------------------------------------------------------------------
# Each launch is a ``torch.library`` custom op with a fake (shape-only) implementation, and the
# backward is attached with ``register_autograd``: ``torch.compile`` sees three opaque calls with
# known output shapes and compiles everything around them without a graph break. Autograd saves
# x and the parameters themselves, nothing else.


def _stack_weights(spline_weight: torch.Tensor, base_weight: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``[G+k (+1), out, in]`` in the matmul dtype: the spline slices, then the base weight.

    One cast-and-transpose copy of the (small) weights per launch, so the kernels read
    unit-stride tiles of one tensor."""
    out_features, in_features, n_bases = spline_weight.shape
    n_phi = n_bases + (base_weight is not None)
    w = torch.empty(n_phi, out_features, in_features, dtype=dtype, device=spline_weight.device)
    w[:n_bases].copy_(spline_weight.permute(2, 0, 1))
    if base_weight is not None:
        w[n_bases].copy_(base_weight)
    return w


def _bases_per_program(n_bases: int) -> int:
    """How many bases the gradient kernels stack into one dot: all G+k up to 8 (a power of two,
    as a tl.arange length; more would crowd the registers), in groups beyond that."""
    return min(triton.next_power_of_2(n_bases), 8)


def _constants(grid_size: int, spline_order: int, has_base: bool, dtype: torch.dtype) -> dict:
    return dict(GRID_SIZE=grid_size, ORDER=spline_order, HAS_BASE=has_base, DOT_PRECISION=dot_precision(dtype))


@torch.library.custom_op("quadgpt::kan_layer", mutates_args=())
def _forward_op(
    x2: torch.Tensor,
    spline_weight: torch.Tensor,
    base_weight: torch.Tensor | None,
    grid_size: int,
    spline_order: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``y [N, out]`` in ``dtype`` (the matmul dtype) from ``x2 [N, in]`` (any float dtype: the
    bases are computed in fp32 from x as it is)."""
    n, in_features = x2.shape
    out_features = spline_weight.shape[0]
    y = torch.empty(n, out_features, dtype=dtype, device=x2.device)
    if n == 0:
        return y
    x2 = flatten_rows(x2)
    w = _stack_weights(spline_weight, base_weight, dtype)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(out_features, meta["BLOCK_OUT"]))  # noqa: E731
    _kan_fwd_kernel[grid](
        x2, w, y, n, in_features, out_features, x2.stride(0), w.stride(0), w.stride(1), y.stride(0),
        **_constants(grid_size, spline_order, base_weight is not None, dtype),
    )  # fmt: skip
    return y


@_forward_op.register_fake
def _(x2, spline_weight, base_weight, grid_size, spline_order, dtype):
    return x2.new_empty(x2.shape[0], spline_weight.shape[0], dtype=dtype)


@torch.library.custom_op("quadgpt::kan_layer_input_grad", mutates_args=())
def _input_grad_op(
    x2: torch.Tensor,
    spline_weight: torch.Tensor,
    base_weight: torch.Tensor | None,
    g: torch.Tensor,
    grid_size: int,
    spline_order: int,
) -> torch.Tensor:
    """``dL/dx [N, in]`` in x's dtype from ``g = dL/dy [N, out]`` (in the matmul dtype)."""
    n, in_features = x2.shape
    out_features = spline_weight.shape[0]
    dx = torch.empty(n, in_features, dtype=x2.dtype, device=x2.device)
    if n == 0:
        return dx
    x2, g = flatten_rows(x2), flatten_rows(g)
    w = _stack_weights(spline_weight, base_weight, g.dtype)
    bases = _bases_per_program(grid_size + spline_order)
    grid = lambda meta: (  # noqa: E731
        triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(in_features, meta["BLOCK_M"] // bases)
    )
    _kan_bwd_dx_kernel[grid](
        x2, g, w, dx, n, in_features, out_features,
        x2.stride(0), g.stride(0), w.stride(0), w.stride(1), dx.stride(0),
        BASES=bases, **_constants(grid_size, spline_order, base_weight is not None, g.dtype),
    )  # fmt: skip
    return dx


@_input_grad_op.register_fake
def _(x2, spline_weight, base_weight, g, grid_size, spline_order):
    return torch.empty_like(x2)


@torch.library.custom_op("quadgpt::kan_layer_weight_grad", mutates_args=())
def _weight_grad_op(
    x2: torch.Tensor, g: torch.Tensor, grid_size: int, spline_order: int, base: bool, dtype: torch.dtype
) -> torch.Tensor:
    """``dL/dspline_weight [out, in, G+k]``, or with ``base`` ``dL/dbase_weight [out, in]``, in
    ``dtype`` (the parameter's), straight from the fp32 accumulators."""
    n, in_features = x2.shape
    out_features, n_bases = g.shape[1], grid_size + spline_order
    shape = (out_features, in_features) if base else (out_features, in_features, n_bases)
    if n == 0:  # no rows: the gradient is an empty sum
        return torch.zeros(shape, dtype=dtype, device=x2.device)
    dw = torch.empty(shape, dtype=dtype, device=x2.device)
    x2, g = flatten_rows(x2), flatten_rows(g)
    bases = 0 if base else _bases_per_program(n_bases)  # 0: the SiLU branch
    stack, groups = max(bases, 1), (triton.cdiv(n_bases, bases) if bases else 1)
    stride_b = 0 if base else dw.stride(2)
    grid = lambda meta: (  # noqa: E731
        triton.cdiv(in_features, meta["BLOCK_M"] // stack), triton.cdiv(out_features, meta["BLOCK_OUT"]), groups
    )
    _kan_bwd_dw_kernel[grid](
        x2, g, dw, n, in_features, out_features, x2.stride(0), g.stride(0), stride_b, dw.stride(0), dw.stride(1),
        GRID_SIZE=grid_size, ORDER=spline_order, BASES=bases, DOT_PRECISION=dot_precision(g.dtype),
    )  # fmt: skip
    return dw


@_weight_grad_op.register_fake
def _(x2, g, grid_size, spline_order, base, dtype):
    if base:
        return x2.new_empty(g.shape[1], x2.shape[1], dtype=dtype)
    return x2.new_empty(g.shape[1], x2.shape[1], grid_size + spline_order, dtype=dtype)


def _setup_context(ctx, inputs, output) -> None:
    x2, spline_weight, base_weight, grid_size, spline_order, _ = inputs
    ctx.save_for_backward(x2, spline_weight, base_weight)
    ctx.grid_size, ctx.spline_order = grid_size, spline_order


def _backward(ctx, grad_y):
    x2, spline_weight, base_weight = ctx.saved_tensors
    need_x, need_spline, need_base = ctx.needs_input_grad[:3]
    args = (ctx.grid_size, ctx.spline_order)
    dx = _input_grad_op(x2, spline_weight, base_weight, grad_y, *args) if need_x else None
    dspline = _weight_grad_op(x2, grad_y, *args, False, spline_weight.dtype) if need_spline else None
    # a frozen (requires_grad=False) or absent base weight costs no launch
    dbase = _weight_grad_op(x2, grad_y, *args, True, base_weight.dtype) if need_base else None
    return dx, dspline, dbase, None, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def _compute_dtype(x: torch.Tensor, spline_weight: torch.Tensor, base_weight: torch.Tensor | None) -> torch.dtype:
    """The matmul dtype, decided like ``torch.matmul`` would: the autocast dtype when autocast is
    on for ``x``'s device, else the one dtype all operands must share."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    for name, tensor in (("spline_weight", spline_weight), ("base_weight", base_weight)):
        if tensor is not None and tensor.dtype != x.dtype:
            raise TypeError(
                f"kan_layer: x is {x.dtype} but {name} is {tensor.dtype}; cast them to one dtype "
                "or run under torch.autocast, which casts them."
            )
    return x.dtype


def kan_layer(
    x: torch.Tensor,
    spline_weight: torch.Tensor,
    base_weight: torch.Tensor | None,
    grid_size: int,
    spline_order: int,
) -> torch.Tensor:
    """One KAN layer, fused: ``x [..., in]``, ``spline_weight [out, in, G+k]``, ``base_weight
    [out, in]`` or None -> ``[..., out]``; same math as ``kan_layer_reference`` (uniform grid
    over tanh(x) in [-1, 1], orders 0..3). Differentiable in ``x`` and in every weight that
    requires grad (a frozen base weight gets no gradient and costs no kernel)."""
    if grid_size < 1 or not 0 <= spline_order <= MAX_SPLINE_ORDER:
        raise ValueError(
            f"kan_layer: grid_size = {grid_size}, spline_order = {spline_order}; the Triton kernel needs "
            f"grid_size >= 1 and 0 <= spline_order <= {MAX_SPLINE_ORDER} (use ffn.kernel = 'torch' for other orders)."
        )
    if spline_weight.dim() != 3 or spline_weight.shape[2] != grid_size + spline_order:
        raise ValueError(
            f"kan_layer: spline_weight has shape {tuple(spline_weight.shape)}; expected [out, in, "
            f"grid_size + spline_order = {grid_size + spline_order}]."
        )
    out_features, in_features, _ = spline_weight.shape
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"kan_layer: x has shape {tuple(x.shape)}; its last dim must be in = {in_features}.")
    if base_weight is not None and base_weight.shape != (out_features, in_features):
        raise ValueError(
            f"kan_layer: base_weight has shape {tuple(base_weight.shape)}; expected [out, in] = "
            f"[{out_features}, {in_features}] (or None for base = 'none')."
        )
    for name, tensor in (("x", x), ("spline_weight", spline_weight), ("base_weight", base_weight)):
        if tensor is not None:
            check_float_dtype(name, tensor)
            if tensor.device != x.device:
                raise ValueError(f"kan_layer: {name} is on {tensor.device} but x is on {x.device}; move them together.")
    dtype = _compute_dtype(x, spline_weight, base_weight)
    y = _forward_op(x.reshape(-1, in_features), spline_weight, base_weight, grid_size, spline_order, dtype)
    return y.view(*x.shape[:-1], out_features)
