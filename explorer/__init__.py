"""Engine, public Python API and the Panel app of Prunescope.

Kept light: ``panel serve explorer`` runs this file as a synthetic package, so the facade is
imported lazily on first use: ``from prunescope.explorer import Explorer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.engine import Explorer

__all__ = ["Explorer"]


def __getattr__(name: str) -> Any:
    if name == "Explorer":
        from prunescope.explorer.engine import Explorer

        return Explorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
