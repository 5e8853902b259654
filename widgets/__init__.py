"""Jupyter widgets of Prunescope: thin ipywidgets views over the same engine state as the app.

>>> from prunescope.widgets import ExplorerWidget
>>> ExplorerWidget(Explorer.from_sample("digits_mlp"))   # or simply ``ex.widget()``
"""

from prunescope.widgets.explorer_widget import ExplorerWidget

__all__ = ["ExplorerWidget"]
