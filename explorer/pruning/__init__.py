"""Weight-pruning criteria (a registry of strategy objects) and structured-pruning helpers."""

from prunescope.explorer.pruning.methods import *  # noqa: F401,F403  (transitional re-export)
