import dataclasses
import math

import pytest
import torch
from helpers import FFN_KINDS, tiny_model_config

from quadgpt.config import FFNConfig, ModelConfig
from quadgpt.ffn import build_ffn, ffn_class
from quadgpt.ffn.kan import b_spline_bases
from quadgpt.info import kind_table
from quadgpt.model import GPT

GPT2_SMALL = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257)


@pytest.mark.parametrize("kind", FFN_KINDS)
@pytest.mark.parametrize("shape", [(5, 24), (2, 3, 24)])
def test_ffn_keeps_shape(kind, shape):
    ffn = build_ffn(FFNConfig(kind=kind), 24)
    ffn.init_weights(0.02, 0.02)
    x = torch.randn(*shape)
    y = ffn(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_unknown_kind_lists_known_ones():
    with pytest.raises(ValueError, match="Did you mean 'quadratic'.*Known kinds: mlp, swiglu, quadratic, kan"):
        ffn_class("quadratc")


FORMULA_CASES = [
    FFNConfig(kind="mlp"),
    FFNConfig(kind="mlp", activation="relu", hidden=100),
    FFNConfig(kind="mlp", activation="relu2"),
    FFNConfig(kind="swiglu"),
    FFNConfig(kind="quadratic"),
    FFNConfig(kind="quadratic", rank=3, linear_term=False),
    FFNConfig(kind="kan"),
    FFNConfig(kind="kan", base="none", grid_size=8, spline_order=2),
]


@pytest.mark.parametrize("cfg", FORMULA_CASES, ids=lambda c: f"{c.kind}-{c.rank}-{c.base}-{c.hidden}")
@pytest.mark.parametrize("bias", [True, False])
def test_param_count_matches_documented_formula(cfg, bias):
    d = 48
    ffn = build_ffn(cfg, d, bias=bias)
    assert ffn.num_params() == type(ffn).formula_params(d, ffn.hidden, cfg, bias)


def test_documented_default_widths():
    assert build_ffn(FFNConfig(kind="mlp"), 768).hidden == 3072
    assert build_ffn(FFNConfig(kind="swiglu"), 768).hidden == 2048
    assert build_ffn(FFNConfig(kind="quadratic"), 768).hidden == 1536
    assert build_ffn(FFNConfig(kind="kan"), 768).hidden == 336
    assert build_ffn(FFNConfig(kind="kan", base="none"), 768).hidden == 384


@pytest.mark.parametrize("model_cfg", [GPT2_SMALL, dataclasses.replace(GPT2_SMALL, n_layer=24, n_head=16, n_embd=1024)])
def test_kinds_are_parameter_matched_within_2_percent(model_cfg):
    rows = {r["kind"]: r for r in kind_table(model_cfg)}
    ref = rows["mlp"]["non_embedding_params"]
    assert set(rows) == {*FFN_KINDS, "mlp-relu2"}
    for kind, row in rows.items():
        assert abs(row["non_embedding_params"] / ref - 1) < 0.02, kind


def test_relu2_mlp_is_the_gelu_mlp_with_a_squared_relu():
    rows = {r["kind"]: r for r in kind_table(GPT2_SMALL)}
    mlp, relu2 = rows["mlp"], rows["mlp-relu2"]
    assert relu2["non_embedding_params"] == mlp["non_embedding_params"] and relu2["hidden"] == mlp["hidden"] == 3072
    # 2 elementwise FLOPs per hidden unit (max, square) against GELU's 8; x3 for forward + backward
    assert mlp["flops_per_token"] - relu2["flops_per_token"] == 3 * GPT2_SMALL.n_layer * (8 - 2) * 3072
    ffn = build_ffn(FFNConfig(kind="mlp", activation="relu2"), 16)
    x = torch.randn(3, 16)
    assert torch.equal(ffn(x), ffn.c_proj(torch.relu(ffn.c_fc(x)) ** 2))


def test_gpt2_small_has_gpt2_parameter_count():
    with torch.device("meta"):
        model = GPT(GPT2_SMALL)
    assert model.num_params(non_embedding=False) == 124_439_808  # GPT-2 small, tied head


def test_flops_per_token_matches_nanogpt_formula_for_mlp():
    with torch.device("meta"):
        model = GPT(GPT2_SMALL)
    cfg, t = GPT2_SMALL, 1024
    n = model.num_params(non_embedding=False) - model.wpe.weight.numel()
    nanogpt = 6 * n + 12 * cfg.n_layer * cfg.n_embd * t
    assert abs(model.flops_per_token(t) / nanogpt - 1) < 0.01


def test_flops_grow_with_rank_and_context():
    small = GPT(tiny_model_config("quadratic", rank=1))
    big = GPT(tiny_model_config("quadratic", rank=2, hidden=small.blocks[0].ffn.hidden))
    assert big.flops_per_token() > small.flops_per_token()
    assert small.flops_per_token(32) > small.flops_per_token(16)


def test_b_spline_bases_partition_of_unity_and_locality():
    u = torch.linspace(-1, 1, 101, dtype=torch.float64)
    bases = b_spline_bases(u, grid_size=5, spline_order=3)
    assert bases.shape == (101, 8)
    torch.testing.assert_close(bases.sum(-1), torch.ones(101, dtype=torch.float64))
    assert (bases >= 0).all()
    assert ((bases > 0).sum(-1) <= 4).all()  # cubic: at most k + 1 = 4 bases are non-zero


def _cox_de_boor(u: torch.Tensor, grid_size: int, spline_order: int) -> torch.Tensor:
    """The textbook recursion over every knot, half-open intervals: the oracle for b_spline_bases."""
    step = 2.0 / grid_size
    knots = -1.0 + step * torch.arange(-spline_order, grid_size + spline_order + 1, dtype=u.dtype)
    u = u.unsqueeze(-1)
    bases = ((u >= knots[:-1]) & (u < knots[1:])).to(u.dtype)
    for p in range(1, spline_order + 1):
        left = (u - knots[: -(p + 1)]) / (knots[p:-1] - knots[: -(p + 1)])
        right = (knots[p + 1 :] - u) / (knots[p + 1 :] - knots[1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


@pytest.mark.parametrize("grid_size", [1, 5, 8])
@pytest.mark.parametrize("spline_order", [0, 1, 2, 3, 4])
def test_b_spline_bases_match_cox_de_boor_in_value_and_gradient(grid_size, spline_order):
    torch.manual_seed(0)
    knots = torch.linspace(-1, 1, grid_size + 1, dtype=torch.float64)
    inner = torch.rand(500, dtype=torch.float64) * 2 - 1
    # at a knot the derivative of an order-1 spline jumps; u = 1 is the grid's closed right end, where
    # the half-open oracle's derivative is one-sided, so gradients are compared off those points
    u = torch.cat([inner, knots]).requires_grad_()
    ours, oracle = b_spline_bases(u, grid_size, spline_order), _cox_de_boor(u, grid_size, spline_order)
    if spline_order == 0:  # piecewise constant: at an inner knot, rounding decides the side
        keep = [*range(inner.numel()), inner.numel(), u.numel() - 1]  # the inner points and u = -1, 1
        ours, oracle = ours[keep], oracle[keep]
    torch.testing.assert_close(ours, oracle, rtol=0, atol=1e-12)
    if spline_order == 0:
        return
    u_in = inner.clone().requires_grad_()
    weights = torch.randn(grid_size + spline_order, dtype=torch.float64)
    (grad_ours,) = torch.autograd.grad((b_spline_bases(u_in, grid_size, spline_order) @ weights).sum(), u_in)
    (grad_oracle,) = torch.autograd.grad((_cox_de_boor(u_in, grid_size, spline_order) @ weights).sum(), u_in)
    torch.testing.assert_close(grad_ours, grad_oracle, rtol=1e-10, atol=1e-10)
    if spline_order >= 2:  # C^1 at the knots: the gradient there is two-sided and must agree too
        u_knots = knots[:-1].clone().requires_grad_()
        (g1,) = torch.autograd.grad((b_spline_bases(u_knots, grid_size, spline_order) @ weights).sum(), u_knots)
        (g2,) = torch.autograd.grad((_cox_de_boor(u_knots, grid_size, spline_order) @ weights).sum(), u_knots)
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)


def test_b_spline_bases_gradcheck_and_clamp_outside_the_grid():
    u = (torch.rand(3, 7, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: b_spline_bases(v, 5, 3), (u,))
    outside = torch.tensor([-3.0, 2.5], dtype=torch.float64, requires_grad=True)
    bases = b_spline_bases(outside, 5, 3)
    torch.testing.assert_close(bases, b_spline_bases(torch.tensor([-1.0, 1.0], dtype=torch.float64), 5, 3))
    (grad,) = torch.autograd.grad(bases.sum(), outside)
    assert (grad == 0).all()


def test_kan_freeze_base_and_no_base():
    frozen = build_ffn(FFNConfig(kind="kan", freeze_base=True), 16)
    assert not frozen.layer1.base_weight.requires_grad and frozen.layer1.spline_weight.requires_grad
    assert build_ffn(FFNConfig(kind="kan", base="none"), 16).layer1.base_weight is None


def _deep_model_stats(kind: str) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=12, n_head=6, n_embd=384, block_size=64, vocab_size=512, ffn=FFNConfig(kind=kind))
    model = GPT(cfg)
    hidden_std, stream_std = [], []
    for block in model.blocks:
        if kind == "quadratic":
            block.ffn.register_forward_hook(
                lambda m, inp, out: hidden_std.append(m.hidden_activations(inp[0]).std().item())
            )
        block.register_forward_hook(lambda m, inp, out: stream_std.append(out.std().item()))
    idx, targets = torch.randint(0, cfg.vocab_size, (2, 4, 64))
    logits, loss = model(idx, targets)
    loss.backward()
    grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    return dict(hidden=hidden_std, stream=stream_std, loss=loss.item(), logits_std=logits.std().item(),
                grads_finite=grads_finite, ln_vocab=math.log(cfg.vocab_size))


def test_deep_quadratic_model_stays_finite_and_order_one():
    """12 layers of plain-init quadratic neurons at step 0: the product units are of order 1, and
    the residual stream grows through depth no faster than with GELU MLPs (both ~sqrt(depth))."""
    quad, mlp = _deep_model_stats("quadratic"), _deep_model_stats("mlp")
    assert all(math.isfinite(s) for s in quad["hidden"] + quad["stream"]) and quad["grads_finite"]
    assert all(0.1 < s < 3.0 for s in quad["hidden"]), quad["hidden"]
    assert quad["stream"][-1] < 1.0 and quad["stream"][-1] < 1.5 * mlp["stream"][-1], (quad["stream"], mlp["stream"])
    assert quad["logits_std"] < 1.0 and abs(quad["loss"] - quad["ln_vocab"]) < 0.1


@pytest.mark.parametrize("kind", FFN_KINDS)
def test_each_kind_learns_a_synthetic_task(kind):
    """Next token = (3 * token + 1) mod 64 inside random sequences: the loss must fall below a
    quarter of its initial value (~ln 64 = 4.16) in 150 Adam steps."""
    torch.manual_seed(0)
    model = GPT(tiny_model_config(kind))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        seqs = torch.randint(0, 64, (16, 1))
        for _ in range(32):
            seqs = torch.cat([seqs, (3 * seqs[:, -1:] + 1) % 64], dim=1)
        _, loss = model(seqs[:, :-1], seqs[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 4, (first, loss.item())
