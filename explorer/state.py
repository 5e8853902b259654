"""The per-session state: what the user chose. Views read it and write only through the Explorer."""

from __future__ import annotations

import param

from prunescope.explorer.core.setting import Setting

BACKENDS = ("torch", "numba-cpu", "numba-cuda")


class PruningState(param.Parameterized):
    """One explorer's current :class:`~prunescope.explorer.core.setting.Setting` and evaluation backend.

    Views watch ``setting`` (one event per change, however many fields changed) and ``backend``.
    """

    setting = param.ClassSelector(class_=Setting, default=Setting(), doc="The current setting (weights and tokens).")
    backend = param.Selector(default="torch", objects=list(BACKENDS), doc="Where evaluate() runs the pruned model.")

    # Read-only shortcuts for views and scripts.
    @property
    def method(self) -> str:
        return self.setting.weights.method

    @property
    def sparsity(self) -> float:
        return self.setting.weights.sparsity

    @property
    def layer_sparsity(self) -> dict[str, float]:
        """Per-weight sparsities set by hand, ``{weight: sparsity}``."""
        return self.setting.weights.overrides_dict

    @property
    def options(self) -> dict:
        return dict(self.setting.weights.options)

    @property
    def seed(self) -> int:
        return self.setting.weights.seed
