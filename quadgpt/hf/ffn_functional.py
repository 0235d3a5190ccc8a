"""Stand-in for the export's ``ffn_functional.py``: inside the package, the FFN math is
``quadgpt/ffn/functional.py``; ``quadgpt export`` copies that file under this name beside
``modeling_quadgpt.py``, so the exported model needs no quadgpt install (see ``export.py``)."""

from ..ffn.functional import MLP_ACTIVATIONS, kan_layer_reference, mlp_activation, quadratic_hidden_reference

__all__ = ["MLP_ACTIVATIONS", "kan_layer_reference", "mlp_activation", "quadratic_hidden_reference"]
