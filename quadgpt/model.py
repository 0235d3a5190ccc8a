"""The GPT: GPT-2's decoder with a pluggable feed-forward block.

Token + learned position embeddings, ``n_layer`` pre-LayerNorm blocks (causal self-attention,
then the FFN chosen by ``config.ffn``), a final LayerNorm and an LM head tied to the token
embedding. GPT-2 initialisation: N(0, 0.02), with the projections that write into the residual
stream scaled by ``1/sqrt(2 n_layer)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import causal_attention, check_backend
from .config import ModelConfig
from .ffn import build_ffn
from .tokenizer import tokenizer_vocab_size

INIT_STD = 0.02


@dataclass
class KVCache:
    """Keys and values of every layer for positions ``0 .. length-1``, preallocated.

    ``keys`` / ``values``: ``[n_layer, B, H, max_len, head_dim]``.
    """

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, config: ModelConfig, batch: int, max_len: int, device, dtype) -> "KVCache":
        shape = (config.n_layer, batch, config.n_head, max_len, config.n_embd // config.n_head)
        return cls(torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype))

    @property
    def capacity(self) -> int:
        return self.keys.size(3)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's ``k, v [B, H, T, D]`` after the cached ones; return all so far."""
        end = self.length + k.size(2)
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int):
        super().__init__()
        if config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head}).")
        self.layer_index = layer_index
        self.n_head = config.n_head
        self.backend = config.attention
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(self.layer_index, k, v)
        dropout_p = self.dropout if self.training else 0.0
        y = causal_attention(q, k, v, backend=self.backend, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(batch, seq, width)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.ffn = build_ffn(config.ffn, config.n_embd, bias=config.bias, dropout=config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.ffn(self.ln_2(x))


class GPT(nn.Module):
    """The decoder. ``vocab_size`` rows of the embedding may exceed the tokenizer's ids (GPT-2's
    50,257 are padded to 50,304 for speed); ``token_vocab_size`` is how many ids the tokenizer
    can decode (from ``config.tokenizer``), and ``generate`` never samples the padding rows above it."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        check_backend(config.attention)
        self.config = config
        self.token_vocab_size = min(config.vocab_size, tokenizer_vocab_size(config.tokenizer))
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as GPT-2
        self.reset_parameters()

    def reset_parameters(self) -> None:
        out_std = INIT_STD / math.sqrt(2 * self.config.n_layer)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            for linear, std in ((block.attn.c_attn, INIT_STD), (block.attn.c_proj, out_std)):
                nn.init.normal_(linear.weight, mean=0.0, std=std)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
            block.ffn.init_weights(INIT_STD, out_std)

    # ----------------------------------------------------------------------------------
    # Counting
    # ----------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (tied LM head counted once). ``non_embedding`` drops the token and
        position embeddings, the convention of scaling-law papers."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.wte.weight.numel() + self.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward = 3x forward) per token at context ``seq_len``.

        Forward: every matmul at 2 FLOPs per multiply-add (QKV, attention output, the FFN's own
        count from its ``forward_flops_per_token`` including elementwise work, LM head) plus
        attention scores and weighted sum, ``4 T d`` per layer (nanoGPT's convention: full T, no
        causal halving). With the MLP this equals nanoGPT's ``6N + 12 L d T`` up to the small
        elementwise and LayerNorm terms.
        """
        cfg = self.config
        seq_len = seq_len or cfg.block_size
        d = cfg.n_embd
        per_layer = 2 * d * 3 * d + 2 * d * d + 4 * seq_len * d + self.blocks[0].ffn.forward_flops_per_token()
        forward = cfg.n_layer * per_layer + 2 * d * cfg.vocab_size
        return 3 * forward

    # ----------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``idx [B, T]`` -> ``(logits [B, T, V], loss)``; loss is the mean cross-entropy
        against ``targets`` (-1 ignored) or None. With a ``cache``, ``idx`` continues the cached
        positions and the cache grows by T. ``last_only`` computes logits of the last position."""
        batch, seq = idx.shape
        start = cache.length if cache is not None else 0
        if start + seq > self.config.block_size:
            raise ValueError(f"Sequence of {start + seq} tokens exceeds block_size {self.config.block_size}.")
        pos = torch.arange(start, start + seq, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length += seq
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:, :]
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ----------------------------------------------------------------------------------
    # Generation
    # ----------------------------------------------------------------------------------

    def crop_prompt(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Keep the last tokens of a prompt so that prompt + new tokens fit the context.

        Rule: at least one new token must fit, so a prompt longer than
        ``block_size - max_new_tokens`` keeps its last ``max(1, block_size - max_new_tokens)``
        tokens (and a warning says how many were dropped).
        """
        keep = max(1, self.config.block_size - max_new_tokens)
        if idx.size(1) > keep:
            warnings.warn(
                f"Prompt of {idx.size(1)} tokens + {max_new_tokens} new exceeds the context of "
                f"{self.config.block_size}; keeping the last {keep} prompt tokens.",
                stacklevel=4,  # crop_prompt, generate, no_grad wrapper, caller
            )
            idx = idx[:, -keep:]
        return idx

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        on_token=None,
    ) -> torch.Tensor:
        """Extend ``idx [B, T]`` by ``max_new_tokens`` sampled tokens; returns ``[B, T + new]``.

        With ``use_cache`` the prompt is run once (prefill) and each later step feeds only the
        newest token through the KV cache. ``temperature = 0`` is greedy. ``on_token(step,
        tokens [B])`` is called after each new token (streaming); returning True stops early.
        Prompts longer than the context are cropped by ``crop_prompt``'s rule.
        """
        from .sampling import next_token

        if max_new_tokens > self.config.block_size - 1:
            raise ValueError(f"max_new_tokens must be < block_size ({self.config.block_size}).")
        idx = self.crop_prompt(idx, max_new_tokens)
        cache = None
        if use_cache:
            dtype = next(self.parameters()).dtype
            if torch.is_autocast_enabled(idx.device.type):
                dtype = torch.get_autocast_dtype(idx.device.type)
            cache = KVCache.empty(self.config, idx.size(0), idx.size(1) + max_new_tokens, idx.device, dtype)
        step_input = idx
        for step in range(max_new_tokens):
            if cache is None:
                step_input = idx
            logits, _ = self(step_input, cache=cache, last_only=True)
            # padding rows are no token at all: a draw there would crash any decoder
            token = next_token(logits[:, -1, : self.token_vocab_size], temperature, top_k, top_p, generator)
            idx = torch.cat([idx, token[:, None]], dim=1)
            step_input = token[:, None]
            if on_token is not None and on_token(step, token):
                break
        return idx
