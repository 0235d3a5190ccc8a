"""quadgpt as a Hugging Face ``transformers`` model (copied as is into every export folder).

Self-contained and pure PyTorch: loading an export with ``trust_remote_code=True`` needs neither
quadgpt nor Triton. The math of every FFN kind is the plain reference of ``quadgpt/ffn/*.py``
(the parity tests hold the two to 1e-5), and module names equal quadgpt's, so an export's
``model.safetensors`` is quadgpt's state dict under a ``transformer.`` prefix.

Generation uses ``transformers``' own KV cache (``DynamicCache``) through ``GenerationMixin``;
a 2-D ``attention_mask`` (left padding in a batch) masks keys and shifts the learned positions
so that each row's first real token sits at position 0, as it would alone.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_quadgpt import QuadGPTConfig

# --------------------------------------------------------------------------------------
# Feed-forward blocks (the references of quadgpt/ffn/*.py)
# --------------------------------------------------------------------------------------


class MLP(nn.Module):
    """``act(x W1 + b1) W2 + b2``."""

    def __init__(self, config: QuadGPTConfig):
        super().__init__()
        self.activation = config.activation
        self.c_fc = nn.Linear(config.n_embd, config.ffn_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.c_proj(h)


class SwiGLU(nn.Module):
    """``(silu(x W1) * (x W3)) W2``."""

    def __init__(self, config: QuadGPTConfig):
        super().__init__()
        self.c_gate = nn.Linear(config.n_embd, config.ffn_hidden, bias=config.bias)
        self.c_up = nn.Linear(config.n_embd, config.ffn_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.silu(self.c_gate(x)) * self.c_up(x))


class QuadraticFFN(nn.Module):
    """Hidden unit j: ``sum_k (x.u_jk)(x.v_jk) + x.w_j + b_j``, then a Linear back to ``n_embd``."""

    def __init__(self, config: QuadGPTConfig):
        super().__init__()
        r, h, d = config.rank, config.ffn_hidden, config.n_embd
        self.u = nn.Parameter(torch.empty(r, h, d))
        self.v = nn.Parameter(torch.empty(r, h, d))
        self.w = nn.Parameter(torch.empty(h, d)) if config.linear_term else None
        self.b = nn.Parameter(torch.zeros(h)) if config.bias else None
        self.c_proj = nn.Linear(h, d, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank, hidden, d = self.u.shape
        x2 = x.reshape(-1, d)
        xu = (x2 @ self.u.reshape(rank * hidden, d).t()).view(-1, rank, hidden)
        xv = (x2 @ self.v.reshape(rank * hidden, d).t()).view(-1, rank, hidden)
        h = (xu * xv).sum(dim=1)
        if self.w is not None:
            h = h + x2 @ self.w.t()
        if self.b is not None:
            h = h + self.b
        return self.c_proj(h.view(*x.shape[:-1], hidden))


def b_spline_bases(u: torch.Tensor, grid_size: int, spline_order: int) -> torch.Tensor:
    """Cox-de Boor B-spline bases of ``u`` in [-1, 1] on a uniform grid of ``grid_size``
    intervals extended by ``spline_order`` knots each side: ``[..., grid_size + spline_order]``."""
    step = 2.0 / grid_size
    knots = -1.0 + step * torch.arange(-spline_order, grid_size + spline_order + 1, device=u.device, dtype=u.dtype)
    u = u.unsqueeze(-1)
    bases = ((u >= knots[:-1]) & (u < knots[1:])).to(u.dtype)
    for p in range(1, spline_order + 1):
        left = (u - knots[: -(p + 1)]) / (knots[p:-1] - knots[: -(p + 1)])
        right = (knots[p + 1 :] - u) / (knots[p + 1 :] - knots[1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


class KANLayer(nn.Module):
    """``y_j = sum_i [ sum_b c_jib B_b(tanh x_i) + w_ji silu(x_i) ]`` (base branch optional)."""

    def __init__(self, in_features: int, out_features: int, config: QuadGPTConfig):
        super().__init__()
        self.grid_size, self.spline_order = config.grid_size, config.spline_order
        n_bases = config.grid_size + config.spline_order
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, n_bases))
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features)) if config.kan_base == "silu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_features, in_features, n_bases = self.spline_weight.shape
        x2 = x.reshape(-1, in_features)
        bases = b_spline_bases(torch.tanh(x2), self.grid_size, self.spline_order)
        y = bases.reshape(x2.shape[0], in_features * n_bases) @ self.spline_weight.reshape(out_features, -1).t()
        if self.base_weight is not None:
            y = y + F.silu(x2) @ self.base_weight.t()
        return y.view(*x.shape[:-1], out_features)


class KANFFN(nn.Module):
    def __init__(self, config: QuadGPTConfig):
        super().__init__()
        self.layer1 = KANLayer(config.n_embd, config.ffn_hidden, config)
        self.layer2 = KANLayer(config.ffn_hidden, config.n_embd, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(x))


FFN_CLASSES = {"mlp": MLP, "swiglu": SwiGLU, "quadratic": QuadraticFFN, "kan": KANFFN}

# --------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, config: QuadGPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: DynamicCache | None) -> torch.Tensor:
        """``mask``: boolean ``[B, 1, Tq, Tk]`` (True = may attend); None for plain causal attention
        of a full sequence (Tq = Tk) or of one new token over the cache (Tq = 1)."""
        batch, seq, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if mask is None and seq == k.size(2):  # the whole sequence at once
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a one-token step sees every cached key, else the mask says what
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(batch, seq, width))


class Block(nn.Module):
    def __init__(self, config: QuadGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.ffn = FFN_CLASSES[config.ffn_kind](config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: DynamicCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.ffn(self.ln_2(x))


class QuadGPTPreTrainedModel(PreTrainedModel):
    config_class = QuadGPTConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's N(0, 0.02) for weights that a checkpoint did not provide (never the case for
        a complete export); quadgpt's residual scaling does not matter for loading."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (QuadraticFFN, KANLayer)):
            for name, param in module.named_parameters(recurse=False):
                if name == "b":
                    nn.init.zeros_(param)
                else:
                    nn.init.normal_(param, mean=0.0, std=std)


def attention_mask_4d(padding_mask: torch.Tensor, past: int, seq: int) -> torch.Tensor:
    """Boolean ``[B, 1, seq, past + seq]`` from a 2-D ``padding_mask [B, past + seq]`` (1 = real
    token): causal, padding keys hidden. Each query also sees itself so that no row is empty
    (a padding query's output is never used)."""
    total = past + seq
    q_pos = torch.arange(past, total, device=padding_mask.device)[:, None]
    k_pos = torch.arange(total, device=padding_mask.device)[None, :]
    causal = k_pos <= q_pos
    keys = padding_mask[:, None, None, :total].bool()
    return (causal & keys) | (k_pos == q_pos)


class QuadGPTModel(QuadGPTPreTrainedModel):
    def __init__(self, config: QuadGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        """Final hidden states ``[B, T, n_embd]`` and the (grown) cache."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of input_ids and inputs_embeds.")
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        batch, seq = x.shape[:2]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past + seq > self.config.block_size:
            raise ValueError(
                f"{past + seq} tokens exceed this model's context of {self.config.block_size} "
                "(max_position_embeddings): shorten the prompt or max_new_tokens."
            )
        padded = attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all())
        mask = None  # plain causal: the attention needs no mask for a full pass or a one-token step
        if padded or (past and seq > 1):
            keys = attention_mask if padded else torch.ones(batch, past + seq, dtype=torch.bool, device=x.device)
            mask = attention_mask_4d(keys, past, seq)
        if position_ids is None:
            if padded:  # left padding: count real tokens only
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past : past + seq]
            else:
                position_ids = torch.arange(past, past + seq, device=x.device)[None, :]
        x = x + self.wpe(position_ids)
        cache = past_key_values if use_cache else None
        for block in self.blocks:
            x = block(x, mask, cache)
        return self.ln_f(x), cache


class QuadGPTForCausalLM(QuadGPTPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: QuadGPTConfig):
        super().__init__(config)
        self.transformer = QuadGPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (of the last ``logits_to_keep`` positions; 0 = all); with ``labels`` (-100 =
        ignore) also the mean next-token cross-entropy, labels shifted inside as in GPT-2."""
        hidden, cache = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].float().reshape(-1, logits.size(-1))
            loss = F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache)


__all__ = ["QuadGPTConfig", "QuadGPTModel", "QuadGPTForCausalLM", "QuadGPTPreTrainedModel"]
