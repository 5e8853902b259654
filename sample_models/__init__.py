"""Registry of built-in sample models, their data and shipped checkpoints.

>>> from prunescope.sample_models import list_sample_models, get_sample_model
>>> spec = get_sample_model("digits_mlp"); model = spec.load("trained"); x, y = spec.data("test")
"""

from prunescope.sample_models._registry import (
    CHECKPOINTS,
    SampleModel,
    get_sample_model,
    list_sample_models,
    register_sample_model,
)
from prunescope.sample_models import digits as _digits  # noqa: F401  (registers the digits models)
from prunescope.sample_models import shapes as _shapes  # noqa: F401  (registers shapes_vit)

__all__ = ["CHECKPOINTS", "SampleModel", "get_sample_model", "list_sample_models", "register_sample_model"]
