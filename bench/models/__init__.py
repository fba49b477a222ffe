"""Models: adapters over the zoo, timm, torch factories and local checkpoints."""

from bench.models.adapter import ModelAdapter
from bench.models.first_linear import FirstLinear
from bench.models.sources import from_module, list_models, load_model

__all__ = ["FirstLinear", "ModelAdapter", "from_module", "list_models", "load_model"]
