"""The per-session state: what the user chose. Views read and write only this object."""

from __future__ import annotations

from dataclasses import dataclass

import param

from prunescope.explorer.pruning import METHODS

BACKENDS = ("torch", "numba-cpu", "numba-cuda")


class PruningState(param.Parameterized):
    """Inputs of one pruning setting; the Panel app and the Jupyter widget are views of it."""

    method = param.Selector(default="magnitude", objects=list(METHODS), doc="Pruning criterion.")
    sparsity = param.Number(
        default=0.0, bounds=(0.0, 1.0), inclusive_bounds=(True, False),
        doc="Fraction of prunable weights removed (channel: fraction of channels per layer).",
    )
    layer_sparsity = param.Dict(default={}, doc="Per-layer sparsities set by hand, {layer: sparsity}.")
    n = param.Integer(default=2, bounds=(1, None), doc="N of the N:M pattern (kept per group).")
    m = param.Integer(default=4, bounds=(2, None), doc="M of the N:M pattern (group size).")
    norm = param.Selector(default="l1", objects=["l1", "l2"], doc="Channel norm for structured pruning.")
    skip_first_last = param.Boolean(default=False, doc="Keep the first and last layer dense (LAMP's Unif+).")
    seed = param.Integer(default=0, bounds=(0, None), doc="Seed for random pruning and SNIP's calibration batch.")
    backend = param.Selector(default="torch", objects=list(BACKENDS), doc="Where evaluate() runs the pruned model.")

    def spec(self) -> "PruneSpec":
        """The immutable key of the current setting (what results are memoised by)."""
        return PruneSpec(
            method=self.method,
            sparsity=float(self.sparsity),
            overrides=tuple(sorted(self.layer_sparsity.items())),
            n=self.n,
            m=self.m,
            norm=self.norm,
            skip_first_last=self.skip_first_last,
            seed=self.seed,
        )


@dataclass(frozen=True)
class PruneSpec:
    """Everything the masks depend on, hashable."""

    method: str
    sparsity: float
    overrides: tuple[tuple[str, float], ...] = ()
    n: int = 2
    m: int = 4
    norm: str = "l1"
    skip_first_last: bool = False
    seed: int = 0

    def options(self) -> dict:
        """Keyword options of the method's ``masks`` call."""
        if self.method == "nm":
            return {"n": self.n, "m": self.m}
        if self.method == "channel":
            return {"norm": self.norm}
        return {}
