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


def b_spline_bases(u: torch.Tensor, grid_size: int, spline_order: int) -> torch.Tensor:
    """B-spline bases of ``u`` (values in [-1, 1]) on a uniform grid: ``[..., G + k]``.

    Cox-de Boor recursion (de Boor, *A Practical Guide to Splines*, 1978) over the extended knots
    ``t_j = -1 + (j - k) 2/G``, j = 0..G+2k, with G = ``grid_size``, k = ``spline_order``.
    """
    step = 2.0 / grid_size
    knots = -1.0 + step * torch.arange(-spline_order, grid_size + spline_order + 1, device=u.device, dtype=u.dtype)
    u = u.unsqueeze(-1)
    bases = ((u >= knots[:-1]) & (u < knots[1:])).to(u.dtype)
    for p in range(1, spline_order + 1):
        left = (u - knots[: -(p + 1)]) / (knots[p:-1] - knots[: -(p + 1)])
        right = (knots[p + 1 :] - u) / (knots[p + 1 :] - knots[1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


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
