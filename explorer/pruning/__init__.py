"""Weight-pruning criteria: a registry of strategy objects (see :mod:`.base`), one verb each."""

from prunescope.explorer.pruning import methods as _methods  # noqa: F401  (registers the criteria)
from prunescope.explorer.pruning import structured as _structured  # noqa: F401
from prunescope.explorer.pruning import ticket as _ticket  # noqa: F401
from prunescope.explorer.pruning.base import (
    METHODS,
    Masks,
    PruningMethod,
    Ranking,
    ScoreContext,
    Scores,
    check_sparsity,
    get_method,
    keep_highest,
    prune_count,
    register_method,
    unregister_method,
)
from prunescope.explorer.pruning.methods import erk_densities, lamp_scores, nm_groups, nm_mask, uniform_plus_sparsities

__all__ = [
    "METHODS", "Masks", "PruningMethod", "Ranking", "ScoreContext", "Scores", "check_sparsity",
    "erk_densities", "get_method", "keep_highest", "lamp_scores", "nm_groups", "nm_mask",
    "prune_count", "register_method", "uniform_plus_sparsities", "unregister_method",
]
