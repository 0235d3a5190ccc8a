"""Weight and config conversions between quadgpt and Hugging Face formats.

- quadgpt <-> remote-code ``quadgpt`` export: same module names under ``transformer.``; the LM
  head is tied to ``wte`` and not stored.
- quadgpt <-> ``GPT2LMHeadModel``: GPT-2 is quadgpt's ``mlp`` model (learned positions, pre-LN,
  tied head, LayerNorm eps 1e-5, 1/sqrt(head_dim) attention scaling) with biases everywhere and
  ``Conv1D`` layers, whose weights are stored ``[in, out]`` (a transpose of ``nn.Linear``'s).
"""

from __future__ import annotations

import torch

from ..config import FFNConfig, ModelConfig
from ..ffn import ffn_hidden

HF_PREFIX = "transformer."
TIED_HEAD = "lm_head.weight"

# quadgpt mlp activation <-> GPT2Config.activation_function (exact GELU, tanh GELU, ReLU)
GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
GPT2_ACTIVATION_ALIASES = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
# GPT-2 module -> quadgpt module, per block; the Conv1D ones are transposed
_GPT2_BLOCK_NAMES = {
    "ln_1": "ln_1",
    "attn.c_attn": "attn.c_attn",
    "attn.c_proj": "attn.c_proj",
    "ln_2": "ln_2",
    "mlp.c_fc": "ffn.c_fc",
    "mlp.c_proj": "ffn.c_proj",
}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


# --------------------------------------------------------------------------------------
# Remote-code quadgpt export
# --------------------------------------------------------------------------------------


def quadgpt_hf_config_kwargs(cfg: ModelConfig) -> dict:
    """``QuadGPTConfig`` keyword arguments for ``cfg`` (with the FFN width resolved)."""
    ffn = cfg.ffn
    return dict(
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        block_size=cfg.block_size,
        bias=cfg.bias,
        ffn_kind=ffn.kind,
        ffn_hidden=ffn_hidden(ffn, cfg.n_embd),
        activation=ffn.activation,
        rank=ffn.rank,
        linear_term=ffn.linear_term,
        grid_size=ffn.grid_size,
        spline_order=ffn.spline_order,
        kan_base=ffn.base,
    )


def trim_vocab(state: dict[str, torch.Tensor], vocab: int) -> dict[str, torch.Tensor]:
    """``state`` with the token embedding (and the head tied to it) cut to its first ``vocab``
    rows: the padding rows quadgpt adds for speed are no token, and an export must not sample
    them. A ``vocab`` at or above the row count leaves ``state`` as it is."""
    out = dict(state)
    for name in ("wte.weight", TIED_HEAD):
        if name in out:
            out[name] = out[name][:vocab]
    return out


def to_quadgpt_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """quadgpt state dict -> ``QuadGPTForCausalLM`` state dict (tied head left out)."""
    return {HF_PREFIX + name: tensor for name, tensor in state.items() if name != TIED_HEAD}


# --------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------


def gpt2_shape_problems(cfg: ModelConfig) -> list[str]:
    """Why ``cfg`` cannot be written as a ``GPT2LMHeadModel`` (empty list: it can)."""
    problems = []
    if cfg.ffn.kind != "mlp":
        problems.append(
            f"its FFN is '{cfg.ffn.kind}', and GPT2LMHeadModel only has the two-layer MLP "
            "(export it without --format gpt2: the quadgpt format carries its own modeling code)"
        )
    elif cfg.ffn.activation not in GPT2_ACTIVATIONS:
        problems.append(f"its MLP activation '{cfg.ffn.activation}' has no GPT-2 equivalent")
    return problems


def gpt2_config_kwargs(cfg: ModelConfig) -> dict:
    """``GPT2Config`` keyword arguments for a GPT-2-shaped ``cfg`` (dropout off: an export is for inference)."""
    return dict(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=ffn_hidden(cfg.ffn, cfg.n_embd),
        activation_function=GPT2_ACTIVATIONS[cfg.ffn.activation],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=50256,
        eos_token_id=50256,
        tie_word_embeddings=True,
    )


def to_gpt2_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """quadgpt state dict -> ``GPT2LMHeadModel`` state dict. A model without biases gets zero
    biases (GPT-2 always has them; adding zero changes nothing)."""
    out = {
        "transformer.wte.weight": state["wte.weight"],
        "transformer.wpe.weight": state["wpe.weight"],
    }
    for layer in range(cfg.n_layer):
        for gpt2_name, ours in _GPT2_BLOCK_NAMES.items():
            weight = state[f"blocks.{layer}.{ours}.weight"]
            bias = state.get(f"blocks.{layer}.{ours}.bias")
            if gpt2_name in _CONV1D:
                weight = weight.t().contiguous()
            out[f"transformer.h.{layer}.{gpt2_name}.weight"] = weight
            # a Conv1D's [in, out] weight and a LayerNorm's [d] weight both end in the bias size
            out[f"transformer.h.{layer}.{gpt2_name}.bias"] = weight.new_zeros(weight.shape[-1]) if bias is None else bias
    out["transformer.ln_f.weight"] = state["ln_f.weight"]
    out["transformer.ln_f.bias"] = state.get("ln_f.bias", state["ln_f.weight"].new_zeros(cfg.n_embd))
    return out


def model_config_from_gpt2(gpt2_config) -> ModelConfig:
    """The quadgpt ``ModelConfig`` of a ``GPT2Config``; ValueError naming any feature quadgpt lacks."""
    problems = []
    activation = GPT2_ACTIVATION_ALIASES.get(gpt2_config.activation_function)
    if activation is None:
        known = ", ".join(GPT2_ACTIVATION_ALIASES)
        problems.append(f"activation_function '{gpt2_config.activation_function}' (quadgpt has {known})")
    if getattr(gpt2_config, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx = True")
    if not getattr(gpt2_config, "scale_attn_weights", True):
        problems.append("scale_attn_weights = False")
    if getattr(gpt2_config, "add_cross_attention", False):
        problems.append("add_cross_attention = True")
    if not getattr(gpt2_config, "tie_word_embeddings", True):
        problems.append("tie_word_embeddings = False (an LM head of its own; quadgpt's head is the token embedding)")
    if abs(gpt2_config.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon = {gpt2_config.layer_norm_epsilon} (quadgpt uses 1e-5)")
    if problems:
        raise ValueError("This GPT-2 model uses what quadgpt does not implement: " + "; ".join(problems) + ".")
    hidden = gpt2_config.n_inner or 4 * gpt2_config.n_embd  # 0 below = quadgpt's default, 4d
    return ModelConfig(
        n_layer=gpt2_config.n_layer,
        n_head=gpt2_config.n_head,
        n_embd=gpt2_config.n_embd,
        block_size=gpt2_config.n_positions,
        vocab_size=gpt2_config.vocab_size,
        dropout=0.0,
        bias=True,
        ffn=FFNConfig(kind="mlp", hidden=0 if hidden == 4 * gpt2_config.n_embd else hidden, activation=activation),
    )


def from_gpt2_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """``GPT2LMHeadModel`` (or ``GPT2Model``) state dict -> quadgpt state dict; ``lm_head.weight``
    is ``wte.weight`` (GPT-2 ties them), so the result loads into ``GPT`` strictly."""
    state = {name.removeprefix(HF_PREFIX): tensor for name, tensor in state.items()}
    out = {"wte.weight": state["wte.weight"], "wpe.weight": state["wpe.weight"]}
    for layer in range(cfg.n_layer):
        for gpt2_name, ours in _GPT2_BLOCK_NAMES.items():
            weight = state[f"h.{layer}.{gpt2_name}.weight"]
            out[f"blocks.{layer}.{ours}.weight"] = weight.t().contiguous() if gpt2_name in _CONV1D else weight
            out[f"blocks.{layer}.{ours}.bias"] = state[f"h.{layer}.{gpt2_name}.bias"]
    out["ln_f.weight"], out["ln_f.bias"] = state["ln_f.weight"], state["ln_f.bias"]
    out[TIED_HEAD] = out["wte.weight"]
    return out


def max_logit_difference(model, hf_model, vocab: int) -> float:
    """Largest |logit difference| between quadgpt ``model`` (its first ``vocab`` columns) and a
    transformers ``hf_model`` on 2 x 16 seeded random ids; inf when the shapes differ. Both
    conversions (export and import) check their result with it before reporting success."""
    idx = torch.randint(0, vocab, (2, min(16, model.config.block_size)), generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ours, theirs = model(idx)[0][..., :vocab], hf_model(idx).logits
    model.train(was_training)
    return (ours - theirs).abs().max().item() if ours.shape == theirs.shape else float("inf")
