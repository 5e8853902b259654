"""Server lifecycle hooks of ``panel serve explorer`` (Bokeh runs this file for directory apps).

When the server loads, before the first visitor: start compiling the Numba kernels in the
background, import torch, scikit-learn and the app, and load the digits data, so that no session
pays for imports and no slider move waits for a JIT compile. Absolute imports only: Bokeh loads
``explorer/`` as a synthetic package.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("prunescope.explorer.app_hooks")


def on_server_loaded(server_context) -> None:
    """Warm the process up once per server: imports and data here, then the JIT compiles of the
    kernels and of umap on background threads.

    Every module those threads need is imported here first, on the main thread. Two threads
    importing torch (or numba, scikit-learn, umap) at once can each hold one module's import lock
    while waiting for the other's; Python breaks that cycle by handing one of them the partially
    initialised module ("partially initialized module 'torch' has no attribute 'Tensor'"), and
    the warm-up future would keep that error for the life of the server."""
    start = time.perf_counter()
    import sklearn.datasets  # noqa: F401
    import torch  # noqa: F401
    import umap  # noqa: F401 - umap imports numba, pynndescent and scikit-learn's neighbours

    import prunescope.explorer.app.app  # noqa: F401 - Panel views, Bokeh models, the engine
    import prunescope.kernels  # noqa: F401
    from prunescope.explorer.app.backends import evaluation_backends, kernel_warmup
    from prunescope.explorer.geometry import warmup_umap
    from prunescope.sample_models import get_sample_model, list_sample_models

    kernel_warmup()  # a daemon thread; sessions wait for its future on their worker threads
    warmup_umap()  # umap's Numba JIT on a background thread: the Geometry tab's first fit skips it
    for name in list_sample_models():
        get_sample_model(name).data("test")  # the digits split is cached for the process
    log.info("prunescope: imports and data ready in %.1f s; backends %s; kernels compiling in the background",
             time.perf_counter() - start, evaluation_backends())
