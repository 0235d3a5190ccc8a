"""Hugging Face configuration of a quadgpt model (copied as is into every export folder).

Self-contained on purpose: ``AutoConfig.from_pretrained(folder, trust_remote_code=True)`` loads
it without quadgpt installed. The fields mirror ``quadgpt.config.ModelConfig`` and its ``ffn``
section, flattened (``ffn_kind``, ``ffn_hidden``, ...), with ``ffn_hidden`` always the resolved
width (never quadgpt's 0 = "default"), so this file needs none of quadgpt's width rules.
"""

from transformers import PretrainedConfig

FFN_KINDS = ("mlp", "swiglu", "quadratic", "kan")
MLP_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "relu2")


class QuadGPTConfig(PretrainedConfig):
    model_type = "quadgpt"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
    }

    def __init__(
        self,
        vocab_size: int = 50304,
        n_layer: int = 12,
        n_head: int = 12,
        n_embd: int = 768,
        block_size: int = 1024,
        bias: bool = True,
        ffn_kind: str = "mlp",
        ffn_hidden: int = 3072,
        activation: str = "gelu",
        rank: int = 1,
        linear_term: bool = True,
        grid_size: int = 5,
        spline_order: int = 3,
        kan_base: str = "silu",
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        bos_token_id: int = 50256,
        eos_token_id: int = 50256,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        if ffn_kind not in FFN_KINDS:
            raise ValueError(f"ffn_kind '{ffn_kind}' is not one of {', '.join(FFN_KINDS)}.")
        if ffn_kind == "mlp" and activation not in MLP_ACTIVATIONS:
            raise ValueError(f"activation '{activation}' is not one of {', '.join(MLP_ACTIVATIONS)}.")
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}).")
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.block_size = block_size
        self.bias = bias
        self.ffn_kind = ffn_kind
        self.ffn_hidden = ffn_hidden
        self.activation = activation
        self.rank = rank
        self.linear_term = linear_term
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.kan_base = kan_base
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs
        )
