"""Feature-space geometry: activations, CKA, robustness geometry, corruptions and 2-D embeddings.

Importing this package does not import umap (its Numba code compiles on first use or in
:func:`warmup_umap`).
"""

from prunescope.explorer.geometry.cka import cka_by_layer, cka_matrix, linear_cka
from prunescope.explorer.geometry.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from prunescope.explorer.geometry.embedding import (
    Embedding,
    cache_dir,
    embedding_key,
    fit_embedding,
    place_neighbors,
    warmup_umap,
)
from prunescope.explorer.geometry.features import (
    capture,
    classifier_layer,
    classifier_weight,
    default_layer,
    features,
    known_layers,
    prunable_layers,
)
from prunescope.explorer.geometry.robustness import (
    compare_geometry,
    flips,
    fragile_samples,
    geometry_sweep,
    robust_samples,
    robustness_geometry,
)

__all__ = [
    "CORRUPTIONS", "SEVERITIES", "Embedding", "cache_dir", "capture", "cka_by_layer", "cka_matrix",
    "classifier_layer", "classifier_weight", "compare_geometry", "corrupt", "default_layer",
    "embedding_key", "features", "fit_embedding", "flips", "fragile_samples", "geometry_sweep",
    "known_layers", "linear_cka", "place_neighbors", "prunable_layers", "robust_samples",
    "robustness_geometry", "warmup_umap",
]
