"""Prunescope: an interactive explorer for neural-network pruning.

Subpackages: :mod:`prunescope.explorer` (engine, Python API and the Panel app),
:mod:`prunescope.widgets` (Jupyter widgets), :mod:`prunescope.kernels` (Numba sparse kernels)
and :mod:`prunescope.sample_models` (built-in models with shipped weights).
"""

__version__ = "0.1.0"
