"""Engine, public Python API and the Panel app of Prunescope.

Kept light: ``panel serve explorer`` runs this file as a synthetic package, so the public names
are imported lazily on first use: ``from prunescope.explorer import Explorer, linear_cka``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.core.setting import Setting, TokenSetting, WeightSetting
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.geometry.cka import linear_cka
    from prunescope.explorer.lottery.overlap import mask_overlap

_LAZY = {
    "Explorer": "prunescope.explorer.engine",
    "Setting": "prunescope.explorer.core.setting",
    "WeightSetting": "prunescope.explorer.core.setting",
    "TokenSetting": "prunescope.explorer.core.setting",
    "linear_cka": "prunescope.explorer.geometry.cka",
    "mask_overlap": "prunescope.explorer.lottery.overlap",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
