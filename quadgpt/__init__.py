"""quadgpt: a nanoGPT-style GPT whose feed-forward neurons are pluggable."""

__version__ = "0.1.0"

from .config import Config, FFNConfig, ModelConfig, load_config  # noqa: E402
from .model import GPT  # noqa: E402

__all__ = ["Config", "FFNConfig", "ModelConfig", "GPT", "load_config", "__version__"]
