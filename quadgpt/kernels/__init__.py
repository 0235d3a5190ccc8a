"""Triton kernels, each the fast path of a plain-PyTorch reference that tests compare it against.

- ``quadratic.quadratic_hidden``: the quadratic FFN's hidden layer (reference:
  ``quadgpt.ffn.quadratic.quadratic_hidden_reference``).
- ``kan.kan_layer``: one KAN layer (reference: ``quadgpt.ffn.kan.kan_layer_reference``).
- ``common``: interpreter detection and per-GPU autotune configs shared by the kernels.

Nothing is imported here, so ``import quadgpt`` never needs Triton; the FFN modules import a
kernel lazily on the call that uses it. Set ``TRITON_INTERPRET=1`` before that import to run the
kernels on the CPU (slowly; for tests).
"""
