"""The Panel app of Prunescope: thin views over :class:`~prunescope.explorer.Explorer`.

``panel serve explorer`` runs ``explorer/main.py``, which builds one :class:`ExplorerApp` per
browser session with :func:`create_app`. Imported lazily so ``prunescope.explorer`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from prunescope.explorer.app.app import ExplorerApp, create_app

__all__ = ["ExplorerApp", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from prunescope.explorer.app import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
