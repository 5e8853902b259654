"""The functional core: pure functions from (weights snapshot, profile, setting) to results.

Nothing here holds locks or session state, so every function can run on a Dask worker.
"""
