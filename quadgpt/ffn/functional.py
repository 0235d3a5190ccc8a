"""The math of every FFN kind as plain PyTorch functions: the single source of truth.

This file imports nothing but torch on purpose: ``quadgpt export`` copies it verbatim beside the
export's ``modeling_quadgpt.py`` (as ``ffn_functional.py``), so an exported model computes with
exactly the code quadgpt trained with, and the two cannot drift apart. The FFN modules in this
package and the Triton kernels' tests use the same functions as their reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MLP_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "relu2")


def mlp_activation(h: torch.Tensor, name: str) -> torch.Tensor:
    """The MLP's elementwise activation ``name`` (one of ``MLP_ACTIVATIONS``) applied to ``h``.

    Raises ValueError on an unknown name (a silent fallback would change the model's function).
    """
    if name == "relu":
        return F.relu(h)
    if name == "relu2":  # squared ReLU (So et al. 2021, "Primer"), as modded-nanogpt and nanochat use
        return F.relu(h).square()
    if name in ("gelu", "gelu_tanh"):
        return F.gelu(h, approximate="tanh" if name == "gelu_tanh" else "none")
    raise ValueError(f"unknown MLP activation '{name}' (known: {', '.join(MLP_ACTIVATIONS)})")


def quadratic_hidden_reference(
    x: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor | None,
    b: torch.Tensor | None,
) -> torch.Tensor:
    """Quadratic hidden units ``h_j = sum_k (x.u_jk)(x.v_jk) + x.w_j + b_j``.

    Shapes: ``x [..., d]``, ``u, v [r, h, d]``, ``w [h, d]`` or None, ``b [h]`` or None ->
    ``[..., h]``.
    """
    rank, hidden, d = u.shape
    x2 = x.reshape(-1, d)
    xu = (x2 @ u.reshape(rank * hidden, d).t()).view(-1, rank, hidden)
    xv = (x2 @ v.reshape(rank * hidden, d).t()).view(-1, rank, hidden)
    h = (xu * xv).sum(dim=1)
    if w is not None:
        h = h + x2 @ w.t()
    if b is not None:
        h = h + b
    return h.view(*x.shape[:-1], hidden)


def _local_bases(t: torch.Tensor, order: int, lower: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The ``order + 1`` nonzero uniform B-spline bases at offset ``t`` in [0, 1] inside an interval.

    Cox-de Boor on unit-spaced knots in the interval's own coordinate: with ``N^0 = [1]``,
    ``N^p_m = ((t + p - m) N^(p-1)_(m-1) + (m + 1 - t) N^(p-1)_m) / p`` for m = 0..p (terms whose
    index falls outside 0..p-1 are zero). ``lower``, when given, is level ``order - 1``.
    Returns ``order + 1`` tensors shaped like ``t``, left to right.
    """
    levels = lower if lower is not None else [torch.ones_like(t)]
    for p in range(len(levels), order + 1):
        levels = [
            ((t + (p - m)) * levels[m - 1] if m > 0 else 0) + (((m + 1) - t) * levels[m] if m < p else 0)
            for m in range(p + 1)
        ]
        levels = [b / p for b in levels]
    return levels


class _UniformBSplineBases(torch.autograd.Function):
    """``b_spline_bases`` with its derivative in closed form (see there).

    Autograd through the recursion would keep ~10 intermediates of every input; here the backward
    needs only the order-(k-1) bases, because on unit knots ``d N^k_m / dt = N^(k-1)_(m-1) - N^(k-1)_m``
    (de Boor 1978), and ``dt/du = G / 2``.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, grid_size: int, spline_order: int) -> torch.Tensor:
        s = (u.clamp(-1.0, 1.0) + 1.0) * (grid_size / 2)  # position in knot units from -1
        # u = 1 exactly is put in the last interval (t = 1), so no basis index runs past G + k - 1. For
        # k >= 1 the spline is continuous there, so this is the half-open recursion's value; for k = 0
        # that recursion has no interval at u = 1 (all zeros, as the Triton kernel gives), hence t < 1
        interval = s.floor().clamp_(max=grid_size - 1)
        t = s - interval
        lower = _local_bases(t, spline_order - 1) if spline_order > 0 else []
        local = _local_bases(t, spline_order, lower) if spline_order > 0 else [(t < 1).to(t.dtype)]
        index = interval.long().unsqueeze(-1) + torch.arange(spline_order + 1, device=u.device)
        ctx.save_for_backward(u, index, *lower)
        ctx.grid_size = grid_size
        bases = u.new_zeros(*u.shape, grid_size + spline_order)
        return bases.scatter_(-1, index, torch.stack(local, -1))

    @staticmethod
    def backward(ctx, grad_bases: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        u, index, *lower = ctx.saved_tensors
        if not lower:  # order 0: piecewise constant, zero derivative almost everywhere
            return torch.zeros_like(u), None, None
        grad_local = grad_bases.gather(-1, index)
        lower = torch.stack(lower, -1)
        grad_t = (grad_local[..., 1:] * lower).sum(-1) - (grad_local[..., :-1] * lower).sum(-1)
        inside = (u >= -1.0) & (u <= 1.0)  # clamp's derivative, as torch.clamp defines it
        return grad_t * (ctx.grid_size / 2) * inside, None, None


def b_spline_bases(u: torch.Tensor, grid_size: int, spline_order: int) -> torch.Tensor:
    """Order-k B-spline bases of ``u`` on a uniform grid over [-1, 1]: ``[..., G + k]``.

    The knots are ``t_j = -1 + (j - k) 2/G``, j = 0..G+2k, with G = ``grid_size``, k =
    ``spline_order`` (de Boor, *A Practical Guide to Splines*, 1978). Inputs outside [-1, 1] are
    clamped onto it (the model feeds ``tanh``, which stays inside). Only the k + 1 bases of the
    interval ``u`` falls in are nonzero, so they are computed there, O(k^2) per input rather than
    the full recursion's O(k (G + 2k)), and scattered into place; the values equal the full
    Cox-de Boor recursion's to rounding (tests/test_ffn.py keeps it as the oracle).
    Differentiable in ``u``.
    """
    return _UniformBSplineBases.apply(u, grid_size, spline_order)


def kan_layer_reference(
    x: torch.Tensor,
    spline_weight: torch.Tensor,
    base_weight: torch.Tensor | None,
    grid_size: int,
    spline_order: int,
) -> torch.Tensor:
    """One KAN layer ``y_j = sum_i [sum_b c_jib B_b(tanh x_i) + w_ji silu(x_i)]``.

    Shapes: ``x [..., in]``, ``spline_weight [out, in, G+k]``, ``base_weight [out, in]`` or None
    -> ``[..., out]``. Materialises the ``[N, in, G+k]`` bases (the Triton kernel does not).
    """
    out_features, in_features, n_bases = spline_weight.shape
    x2 = x.reshape(-1, in_features)
    bases = b_spline_bases(torch.tanh(x2), grid_size, spline_order)
    y = bases.reshape(x2.shape[0], in_features * n_bases) @ spline_weight.reshape(out_features, -1).t()
    if base_weight is not None:
        y = y + F.silu(x2) @ base_weight.t()
    return y.view(*x.shape[:-1], out_features)
