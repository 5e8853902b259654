"""2-D embeddings of dense features (UMAP, McInnes et al. 2018; or PCA), cached on disk, and the
placement of pruned features in the same frame without a refit.

A UMAP fit is keyed by a SHA-256 of the feature matrix (its bytes, shape and dtype), the UMAP
options and umap's version; changing the weights or the data changes the features and so the
key. Positions are stored as ``<cache dir>/umap/<key>.npz`` (written atomically, read without
pickle); an unreadable or mismatched file is refitted and overwritten, never fatal. The cache
directory is ``$PRUNESCOPE_CACHE_DIR`` when set, else ``platformdirs.user_cache_dir("prunescope")``.

Pruned features are placed by an inverse-distance-weighted mean of the fitted positions of their
``k`` nearest dense points (:func:`place_neighbors`); a point equal to a dense point lands exactly
on it, so at sparsity 0 nothing moves. umap's own ``transform`` is available for comparison
(``placement="transform"``). ``benchmarks/geometry.py`` measured both on the full test splits
(digits_mlp / digits_cnn / shapes_vit, 2-core machine at load ~10): neighbours (k=5) 10-330 ms per
placement, ``transform`` 0.4-11 s; agreement of the 10 nearest dense points (feature space vs
embedding) for held-out dense points 0.60 / 0.63 / 0.47 vs 0.59 / 0.63 / 0.50, at 50 % magnitude
sparsity 0.60 / 0.65 / 0.47 vs 0.59 / 0.63 / 0.49, at 90 % 0.02 / 0.11 / 0.36 vs 0.09 / 0.19 / 0.29
(there the features leave the dense manifold and neither placement keeps neighbourhoods). Equal
fidelity where it matters, exact at sparsity 0 and 5-50x faster: neighbours are the default.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from prunescope.explorer.core.jobs import check_cancel

METHODS = ("umap", "pca")
PLACEMENTS = ("neighbors", "transform")
#: Version of the on-disk format; part of every key.
CACHE_FORMAT = "prunescope-umap-v1"
#: Bound on the bytes of one distance block in :func:`place_neighbors`.
DISTANCE_BLOCK_BYTES = 32 * 2**20


def cache_dir() -> Path:
    """Where embeddings are cached: ``$PRUNESCOPE_CACHE_DIR`` or the user's cache directory."""
    override = os.environ.get("PRUNESCOPE_CACHE_DIR")
    if override:
        return Path(override)
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # platformdirs is not a hard dependency yet
        return Path.home() / ".cache" / "prunescope"
    return Path(user_cache_dir("prunescope"))


def _umap_version() -> str:
    from importlib.metadata import version

    return version("umap-learn")


def embedding_key(features: torch.Tensor, method: str, options: dict[str, Any]) -> str:
    """SHA-256 (hex) of the feature matrix and the fit options: the cache key of an embedding."""
    x = np.ascontiguousarray(torch.as_tensor(features).detach().cpu().numpy())
    digest = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "method": method, "options": options,
              "shape": list(x.shape), "dtype": str(x.dtype),
              "umap": _umap_version() if method == "umap" else None}
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(x.tobytes())
    return digest.hexdigest()


def place_neighbors(
    reference: torch.Tensor, positions: np.ndarray, features: torch.Tensor, k: int = 5
) -> np.ndarray:
    """Positions ``(m, 2)`` of ``features`` as the inverse-distance-weighted mean of the positions
    of their ``k`` nearest ``reference`` rows; a row equal to a reference row gets its position.

    Candidates come from a matrix-product distance in blocks of at most
    :data:`DISTANCE_BLOCK_BYTES`; their distances are then recomputed exactly (differences), so an
    identical row has distance 0 and the placement is exact.
    """
    ref = torch.as_tensor(reference).detach().float().reshape(len(reference), -1)
    x = torch.as_tensor(features).detach().float().reshape(len(features), -1)
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"features have {x.shape[1]} dims, the embedding was fitted on {ref.shape[1]}")
    if not 1 <= k <= len(ref):
        raise ValueError(f"k must be in 1..{len(ref)} (the fitted samples), got {k}")
    pos = torch.from_numpy(np.asarray(positions, dtype=np.float64))
    out = np.empty((len(x), pos.shape[1]), dtype=np.float32)
    candidates = min(len(ref), k + 4)
    block = max(1, DISTANCE_BLOCK_BYTES // (4 * len(ref)))
    ref_sq = ref.square().sum(1)
    for start in range(0, len(x), block):
        xb = x[start : start + block]
        approx = xb.square().sum(1, keepdim=True) - 2 * xb @ ref.T + ref_sq  # (b, n) squared
        idx = approx.topk(candidates, dim=1, largest=False).indices  # (b, c)
        exact = (xb[:, None, :] - ref[idx]).norm(dim=2)  # (b, c); exactly 0 for an identical row
        dist, order = exact.topk(k, dim=1, largest=False)
        idx = idx.gather(1, order)
        weights = 1.0 / dist.double().clamp_min(1e-300)
        hit = dist[:, 0] == 0
        weights[hit] = 0.0
        weights[hit, 0] = 1.0
        weights = weights / weights.sum(1, keepdim=True)
        out[start : start + len(xb)] = (weights[..., None] * pos[idx]).sum(1).numpy()
    return out


@dataclass(eq=False)
class Embedding:
    """A fitted 2-D frame: the dense ``positions`` ``(n, 2)`` of the ``reference`` features.

    ``cache_hit`` says the positions came from the disk cache; ``note`` says what was adjusted.
    ``reducer`` is the fitted ``umap.UMAP`` when it was fitted in this process with
    ``keep_reducer=True`` (needed only for ``placement="transform"``).
    """

    method: str
    positions: np.ndarray
    reference: torch.Tensor
    key: str
    cache_hit: bool
    options: dict[str, Any]
    note: str = ""
    reducer: Any = None
    pca_mean: torch.Tensor | None = None
    pca_components: torch.Tensor | None = None
    path: Path | None = field(default=None, repr=False)

    def place(self, features: torch.Tensor, placement: str = "neighbors", k: int = 5) -> np.ndarray:
        """Positions ``(m, 2)`` of (pruned) ``features`` in this frame, without refitting.

        PCA projects linearly (exact). UMAP uses :func:`place_neighbors` (``k`` neighbours) or,
        with ``placement="transform"``, umap's own out-of-sample ``transform``.
        """
        x = torch.as_tensor(features).detach().float().reshape(len(features), -1)
        if x.shape[1] != self.reference.shape[1]:
            raise ValueError(f"features have {x.shape[1]} dims, the embedding was fitted on {self.reference.shape[1]}")
        if self.method == "pca":
            return ((x.double() - self.pca_mean) @ self.pca_components).float().numpy()
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; known: {', '.join(PLACEMENTS)}")
        if placement == "transform":
            if self.reducer is None:
                raise ValueError("placement='transform' needs the fitted reducer: fit with keep_reducer=True, cache=False")
            return np.asarray(self.reducer.transform(x.numpy()), dtype=np.float32)
        return place_neighbors(self.reference, self.positions, x, k=k)


def _pca(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and the top-2 principal directions ``(d, 2)`` (float64, signs fixed so each
    direction's largest-magnitude loading is positive)."""
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    n, d = xc.shape
    if d <= n:
        _, vecs = torch.linalg.eigh(xc.T @ xc)  # ascending eigenvalues
        comps = vecs[:, -2:].flip(1)
    else:
        vals, vecs = torch.linalg.eigh(xc @ xc.T)
        comps = xc.T @ vecs[:, -2:].flip(1)
        comps = comps / comps.norm(dim=0).clamp_min(1e-300)
    if comps.shape[1] < 2:
        comps = torch.cat([comps, torch.zeros(d, 2 - comps.shape[1], dtype=comps.dtype)], 1)
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True))).squeeze(0)
    return mean, comps * torch.where(signs == 0, 1.0, signs)


def _load(path: Path, key: str, n: int) -> np.ndarray | None:
    """Cached positions at ``path`` if the file is readable and matches; otherwise ``None``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            positions = np.array(data["positions"], dtype=np.float32)
    except Exception:  # noqa: BLE001  any unreadable file is a miss: refit and overwrite
        return None
    if meta.get("key") != key or positions.shape != (n, 2) or not np.isfinite(positions).all():
        return None
    return positions


def _store(path: Path, key: str, positions: np.ndarray, options: dict[str, Any]) -> str:
    """Write atomically (temporary file + ``os.replace``); returns a note if it failed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, positions=positions.astype(np.float32), meta=np.array(json.dumps({"key": key, "options": options})))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        return f"could not write the cache ({error})"
    return ""


def _fit_umap(x: np.ndarray, options: dict[str, Any], seed: int):
    import umap

    reducer = umap.UMAP(n_components=2, random_state=seed, transform_seed=seed, n_jobs=1, **options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        positions = reducer.fit_transform(x)
    return reducer, np.asarray(positions, dtype=np.float32)


def fit_embedding(
    features: torch.Tensor,
    method: str = "umap",
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    seed: int = 0,
    cache: bool = True,
    directory: Path | str | None = None,
    keep_reducer: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Embedding:
    """Fit a 2-D embedding of the dense ``features`` ``(samples, dims)``, from the disk cache
    when the same features and options were fitted before (``cache_hit``).

    UMAP needs ``2 <= n_neighbors < samples``. ``progress(done, 3)`` reports key, lookup and
    fit; setting ``cancel`` (an Event) raises :class:`~prunescope.explorer.core.jobs.Cancelled`
    between them (the UMAP fit itself is one uninterruptible call).
    """
    if method not in METHODS:
        raise ValueError(f"unknown embedding method {method!r}; known: {', '.join(METHODS)}")
    x = torch.as_tensor(features).detach().float().cpu()
    x = x.reshape(len(x), -1).contiguous()
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinity; cannot embed them")
    n = len(x)

    def step(done: int) -> None:
        check_cancel(cancel, "embedding fit", done, 3)
        if progress is not None:
            progress(done, 3)

    if method == "pca":
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples, got {n}")
        mean, comps = _pca(x)
        key = embedding_key(x, "pca", {})
        positions = ((x.double() - mean) @ comps).float().numpy()
        step(3)
        return Embedding("pca", positions, x, key, False, {}, pca_mean=mean, pca_components=comps)

    if not 2 <= n_neighbors < n:
        raise ValueError(
            f"UMAP with n_neighbors={n_neighbors} needs 2 <= n_neighbors < samples, got {n} samples; "
            f"lower n_neighbors (at most {max(n - 1, 2)}) or use method='pca'"
        )
    options = {"n_neighbors": int(n_neighbors), "min_dist": float(min_dist), "metric": "euclidean",
               "n_epochs": None if n_epochs is None else int(n_epochs), "seed": int(seed)}
    step(0)
    key = embedding_key(x, "umap", options)
    path = Path(directory) if directory is not None else cache_dir()
    path = path / "umap" / f"{key}.npz"
    step(1)
    note = ""
    if cache:
        positions = _load(path, key, n)
        if positions is not None:
            step(3)
            return Embedding("umap", positions, x, key, True, options, path=path)
        if path.exists():
            note = "the cache file was unreadable or did not match; refitted"
    step(2)
    fit_options = {k: v for k, v in options.items() if k != "seed"}
    reducer, positions = _fit_umap(x.numpy(), fit_options, seed)
    if cache:
        note = "; ".join(filter(None, [note, _store(path, key, positions, options)]))
    step(3)
    return Embedding("umap", positions, x, key, False, options, note=note,
                     reducer=reducer if keep_reducer else None, path=path if cache else None)


def _warmup(transform: bool) -> float:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    reducer, _ = _fit_umap(x, {"n_neighbors": 5, "n_epochs": 20}, seed=0)
    if transform:
        reducer.transform(x[:8] + np.float32(0.01))
    return time.perf_counter() - start


def warmup_umap(transform: bool = False) -> Future:
    """Import umap and JIT-compile its Numba code on a background thread (a tiny fit on random
    data); returns a ``Future`` of the seconds it took. Call once at server start."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunescope-umap-warmup")
    try:
        return executor.submit(_warmup, transform)
    finally:
        executor.shutdown(wait=False)
