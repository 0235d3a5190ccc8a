"""Triton kernels for the quadratic FFN's hidden layer (reference:
``quadgpt.ffn.quadratic.quadratic_hidden_reference``)::

    h = sum_k (x u_k) * (x v_k) + x W + b          x [N, d], u_k, v_k, W [h, d], b [h]

Forward: one kernel, one program per ``[BLOCK_M, BLOCK_N]`` tile of ``h``. It loops over ``d``
loading each tile of ``x`` once per rank and feeding it to the ``u_k``, ``v_k`` (and, in the first
pass, ``W``) dots, multiplies the two fp32 accumulators and writes only ``h``: the ``N x h``
products ``xU``, ``xV``, ``xW`` that the reference materialises never reach memory.

Backward, with ``g = dL/dh``: ``dL/d(x u_k) = g * (x v_k)`` and ``dL/d(x v_k) = g * (x u_k)``. Only
``x`` and the weights are saved; one kernel recomputes ``x u_k`` and ``x v_k`` tile by tile and
writes ``P = [g * xv_0 .. g * xv_{r-1} | g * xu_0 .. g * xu_{r-1} | g]`` (``N x (2r+1) h``, freed
at the end of the backward). Stacking the weights the same way, ``Wcat = [U; V; W]``, every
remaining gradient is one of two large matmuls, left to cuBLAS (they have no elementwise work
to fuse)::

    dx = P @ Wcat        dWcat = [dU; dV; dW] = P^T @ x        db = sum_rows g

Why not also recompute inside the dx / dU kernels: a tile of ``dx`` or ``dU`` needs ``x u_k``
for a full ``[BLOCK_M, h]`` or ``[N, BLOCK_N]`` slab, so recomputing there repeats the
projection ``d / BLOCK`` times (6x at d = 768), which costs more than writing and reading ``P``
once.

Under CUDA autocast ``x`` arrives in bf16/fp16 and the parameters in fp32; like a matmul, all are
cast to the autocast dtype, the dots accumulate in fp32, and ``h`` comes out in that dtype (the
casts are differentiable, so fp32 parameters get fp32 gradients).

The two kernel launches are ``torch.library`` custom ops and the backward is attached with
``register_autograd`` (the custom-op form of a ``torch.autograd.Function``): ``torch.compile``
then sees each launch as one opaque call with a known output shape and traces, fuses and
schedules everything around it, the backward's matmuls included, with no graph break.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import autotune, check_float_dtype, dot_precision, flatten_rows


def _configs(specs: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
    """``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)`` tuples as Triton configs.

    Three fp32 accumulators live in registers at once (xu, xv and the output), so tiles stay at
    128 x 128 with 8 warps or smaller. Compiled ahead of time with Triton 3.9 in bf16, no sm90
    config spills registers and on sm80 only 128 x 128 does (under 50 bytes). Each pipeline
    stage holds an x tile and three weight tiles; in fp32 most configs exceed shared memory and
    the autotuner skips them (fp32 is the correctness path, bf16 the fast one)."""
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for m, n, k, w, s in specs
    ]


_HOPPER = _configs(
    [
        (128, 128, 64, 8, 3),
        (128, 128, 32, 8, 4),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (128, 64, 64, 8, 4),
        (64, 64, 64, 4, 5),
        (64, 64, 32, 4, 4),  # the one that fits shared memory in fp32 besides 128 x 128 x 32
    ]
)
_AMPERE = _configs(
    [
        (128, 128, 32, 8, 3),
        (128, 64, 32, 8, 4),
        (64, 128, 32, 8, 4),
        (128, 64, 64, 8, 3),
        (64, 64, 32, 4, 4),
    ]
)
# Blocks of 16 (tl.dot's minimum) so the tiny test shapes span several tiles and ragged edges.
_INTERPRET = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}, num_warps=4, num_stages=1)


@triton.jit
def _tile_ids(N, H, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped order over the ``[N, H]`` output tiles: ``GROUP_M`` row tiles walk the columns
    together, so the weight tiles they share stay in L2."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(N, BLOCK_M)
    tiles_n = tl.cdiv(H, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_size = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_size
    pid_n = (pid % per_group) // group_size
    return pid_m, pid_n


@triton.jit
def _rank_projections(
    x_ptr,
    u_ptr,
    v_ptr,
    w_ptr,
    lin,
    offs_m,
    offs_n,
    N,
    H,
    D,
    stride_xn,
    rank,
    WITH_W: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The fp32 tiles ``x u_rank`` and ``x v_rank`` of one ``[BLOCK_M, BLOCK_N]`` output tile;
    with ``WITH_W`` the same pass over ``d`` also adds ``x W`` into ``lin``."""
    xu = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    xv = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < N
    n_mask = offs_n < H
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xn
    # [BLOCK_K, BLOCK_N] tiles of the transposed [H, D] weights, at column k0 = 0
    w_tile = offs_n[None, :] * D + offs_k[:, None]
    rank_offset = rank * H * D
    for k0 in range(0, D, BLOCK_K):
        k_mask = (k0 + offs_k) < D
        x_tile = tl.load(x_rows + (k0 + offs_k)[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        w_mask = k_mask[:, None] & n_mask[None, :]
        u_tile = tl.load(u_ptr + rank_offset + k0 + w_tile, mask=w_mask, other=0.0)
        v_tile = tl.load(v_ptr + rank_offset + k0 + w_tile, mask=w_mask, other=0.0)
        xu = tl.dot(x_tile, u_tile, xu, input_precision=PRECISION)
        xv = tl.dot(x_tile, v_tile, xv, input_precision=PRECISION)
        if WITH_W:
            lin_tile = tl.load(w_ptr + k0 + w_tile, mask=w_mask, other=0.0)
            lin = tl.dot(x_tile, lin_tile, lin, input_precision=PRECISION)
    return xu, xv, lin


@autotune(hopper=_HOPPER, ampere=_AMPERE, interpret=_INTERPRET, key=["N", "H", "D"])
@triton.jit
def _forward_kernel(
    x_ptr,
    u_ptr,
    v_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    N,
    H,
    D,
    stride_xn,
    stride_on,
    RANK: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile_ids(N, H, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r in tl.static_range(RANK):
        xu, xv, acc = _rank_projections(
            x_ptr, u_ptr, v_ptr, w_ptr, acc, offs_m, offs_n, N, H, D, stride_xn, r,
            HAS_W and r == 0, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        acc += xu * xv
    n_mask = offs_n < H
    if HAS_B:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + offs_m.to(tl.int64)[:, None] * stride_on + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(offs_m < N)[:, None] & n_mask[None, :])


@autotune(hopper=_HOPPER, ampere=_AMPERE, interpret=_INTERPRET, key=["N", "H", "D"])
@triton.jit
def _backward_products_kernel(
    x_ptr,
    u_ptr,
    v_ptr,
    g_ptr,
    p_ptr,
    N,
    H,
    D,
    stride_xn,
    stride_gn,
    stride_pn,
    RANK: tl.constexpr,
    HAS_W: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Recompute ``x u_k``, ``x v_k`` for one tile and write the blocks of ``P`` (module docstring)."""
    pid_m, pid_n = _tile_ids(N, H, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m < N)[:, None] & (offs_n < H)[None, :]
    rows = offs_m.to(tl.int64)[:, None]
    g_raw = tl.load(g_ptr + rows * stride_gn + offs_n[None, :], mask=mask, other=0.0)
    g = g_raw.to(tl.float32)
    p_tile = p_ptr + rows * stride_pn + offs_n[None, :]
    unused = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r in tl.static_range(RANK):
        xu, xv, unused = _rank_projections(
            x_ptr, u_ptr, v_ptr, u_ptr, unused, offs_m, offs_n, N, H, D, stride_xn, r,
            False, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        tl.store(p_tile + r * H, (g * xv).to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(p_tile + (RANK + r) * H, (g * xu).to(p_ptr.dtype.element_ty), mask=mask)
    if HAS_W:
        tl.store(p_tile + 2 * RANK * H, g_raw.to(p_ptr.dtype.element_ty), mask=mask)


def _grid(n_rows: int, hidden: int):
    return lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]) * triton.cdiv(hidden, meta["BLOCK_N"]),)


@torch.library.custom_op("quadgpt::quadratic_hidden", mutates_args=())
def _quadratic_hidden_op(
    x2: torch.Tensor, u: torch.Tensor, v: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None
) -> torch.Tensor:
    """The forward kernel on ``x2 [N, d]`` (all tensors one dtype) -> ``[N, h]``."""
    rank, hidden, d = u.shape
    x2, u, v = flatten_rows(x2), u.contiguous(), v.contiguous()
    n_rows = x2.shape[0]
    out = torch.empty(n_rows, hidden, device=x2.device, dtype=x2.dtype)
    if n_rows == 0:
        return out
    _forward_kernel[_grid(n_rows, hidden)](
        x2, u, v, w.contiguous() if w is not None else u, b.contiguous() if b is not None else u, out,
        n_rows, hidden, d, x2.stride(0), out.stride(0),
        RANK=rank, HAS_W=w is not None, HAS_B=b is not None, PRECISION=dot_precision(x2.dtype),
    )  # fmt: skip
    return out


@_quadratic_hidden_op.register_fake
def _(x2, u, v, w, b):
    return x2.new_empty(x2.shape[0], u.shape[1])


@torch.library.custom_op("quadgpt::quadratic_hidden_backward_products", mutates_args=())
def _backward_products_op(
    x2: torch.Tensor, u: torch.Tensor, v: torch.Tensor, g: torch.Tensor, has_w: bool
) -> torch.Tensor:
    """``P [N, (2r + has_w) h]`` from ``x2 [N, d]`` and ``g = dL/dh [N, h]`` (module docstring)."""
    rank, hidden, d = u.shape
    x2, g, u, v = flatten_rows(x2), flatten_rows(g), u.contiguous(), v.contiguous()
    n_rows = x2.shape[0]
    p = torch.empty(n_rows, (2 * rank + int(has_w)) * hidden, device=x2.device, dtype=x2.dtype)
    if n_rows == 0:
        return p
    _backward_products_kernel[_grid(n_rows, hidden)](
        x2, u, v, g, p, n_rows, hidden, d, x2.stride(0), g.stride(0), p.stride(0),
        RANK=rank, HAS_W=has_w, PRECISION=dot_precision(x2.dtype),
    )  # fmt: skip
    return p


@_backward_products_op.register_fake
def _(x2, u, v, g, has_w):
    rank, hidden, _ = u.shape
    return x2.new_empty(x2.shape[0], (2 * rank + int(has_w)) * hidden)


def _setup_context(ctx, inputs, output) -> None:
    x2, u, v, w, b = inputs
    ctx.save_for_backward(x2, u, v, w)  # x and the weights only: the products are recomputed
    ctx.b_dtype = b.dtype if b is not None else None


def _backward(ctx, grad_out):
    x2, u, v, w = ctx.saved_tensors
    rank, hidden, d = u.shape
    need_x, need_u, need_v, need_w, need_b = ctx.needs_input_grad
    dx = du = dv = dw = db = None
    g = grad_out.to(x2.dtype)
    if need_x or need_u or need_v or need_w:
        p = _backward_products_op(x2, u, v, g, w is not None)
        if need_x:
            weights = [u.reshape(rank * hidden, d), v.reshape(rank * hidden, d)] + ([w] if w is not None else [])
            dx = p @ torch.cat(weights)
        if need_u or need_v or need_w:
            dweights = p.t() @ x2
            rh = rank * hidden
            du = dweights[:rh].view(rank, hidden, d) if need_u else None
            dv = dweights[rh : 2 * rh].view(rank, hidden, d) if need_v else None
            dw = dweights[2 * rh :] if need_w else None
    if need_b:
        db = g.sum(0, dtype=torch.float32).to(ctx.b_dtype)
    return dx, du, dv, dw, db


_quadratic_hidden_op.register_autograd(_backward, setup_context=_setup_context)


def _check_inputs(x, u, v, w, b) -> None:
    if u.dim() != 3 or u.shape != v.shape:
        raise ValueError(f"u and v must both be [rank, hidden, d]; got u {tuple(u.shape)}, v {tuple(v.shape)}.")
    rank, hidden, d = u.shape
    if x.dim() == 0 or x.shape[-1] != d:
        raise ValueError(f"x must be [..., {d}] to match u [rank, hidden, d] = {tuple(u.shape)}; got {tuple(x.shape)}.")
    if w is not None and w.shape != (hidden, d):
        raise ValueError(f"w must be [hidden, d] = [{hidden}, {d}] or None; got {tuple(w.shape)}.")
    if b is not None and b.shape != (hidden,):
        raise ValueError(f"b must be [hidden] = [{hidden}] or None; got {tuple(b.shape)}.")
    named = [("x", x), ("u", u), ("v", v), ("w", w), ("b", b)]
    for name, tensor in named:
        if tensor is not None and tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}; move them to one device.")


def quadratic_hidden(
    x: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor | None,
    b: torch.Tensor | None,
) -> torch.Tensor:
    """``sum_k (x u_k)(x v_k) + x w^T + b`` for ``x [..., d]``, ``u, v [r, h, d]``, ``w [h, d]`` or
    None, ``b [h]`` or None -> ``[..., h]``: the same as ``quadratic_hidden_reference``, fused.

    All tensors must share a dtype (float16, bfloat16 or float32) unless autocast is on for
    ``x``'s device, in which case they are cast to the autocast dtype as a matmul would be.
    """
    _check_inputs(x, u, v, w, b)
    device_type = x.device.type
    tensors = [x, u, v, w, b]
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        tensors = [t.to(dtype) if t is not None else None for t in tensors]
    for name, tensor in zip("xuvwb", tensors):
        if tensor is not None:
            check_float_dtype(name, tensor)
            if tensor.dtype != tensors[0].dtype:
                raise TypeError(
                    f"{name} is {tensor.dtype} but x is {tensors[0].dtype}; use one dtype for all, or run "
                    "under torch.autocast, which casts them."
                )
    x, u, v, w, b = tensors
    h = _quadratic_hidden_op(x.reshape(-1, x.shape[-1]), u, v, w, b)
    return h.view(*x.shape[:-1], u.shape[1])
