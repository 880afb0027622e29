"""2-D / 3-D coordinates for the scatter view: UMAP, fitted on a sample when large.

UMAP (n_neighbors 15, min_dist 0.1, cosine, fixed random_state) is fitted on all points up
to ``UMAP_FIT_MAX_POINTS``; above that it is fitted on a seeded sample (the landmarks) and
the other points are placed with ``UMAP.transform`` in chunks. Measured on this 2-core box,
384-d float32 blobs, after numba's JIT warm-up:
    fit  20k: 6.7 s      fit 50k: 22.8 s
    transform: 5,600 points/s against a 20k fit (4,300/s against a 50k fit)
so a direct fit of 50k (23 s) costs more than fit-20k + transform-30k (~12 s), and
1,000,000 points take ~7 s + 980k / 5.6k/s = ~3 min instead of a fit UMAP cannot finish
in memory/time on this box.

numba JIT: the first fit in a process compiled for ~30 s and the first transform for
~40 s more on this box (later calls: the figures above). A worker should warm up once
at start (``warm_up()``), not on a user's run.

Fewer points than a UMAP neighbourhood (n <= 15) get PCA coordinates (zero-padded when
there are fewer directions than components), so tiny inputs never crash.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.decomposition import PCA

__all__ = ["UMAP_FIT_MAX_POINTS", "TRANSFORM_CHUNK", "project", "warm_up"]

UMAP_FIT_MAX_POINTS = 20_000
TRANSFORM_CHUNK = 50_000
N_NEIGHBORS = 15
MIN_DIST = 0.1
METRIC = "cosine"


def project(
    X: np.ndarray,
    n_components: int = 2,
    seed: int = 42,
    *,
    fit_sample: int = UMAP_FIT_MAX_POINTS,
    chunk_size: int = TRANSFORM_CHUNK,
    on_progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Coordinates (n x n_components, float32) for the rows of ``X``.

    Deterministic for the same input, ``seed``, ``fit_sample`` and ``chunk_size``.
    ``on_progress`` (optional) is called with the fraction done (0..1) after the fit and
    after each transformed chunk, for the run's progress events.
    """
    if n_components not in (2, 3):
        raise ValueError(f"vis_n_components must be 2 or 3 (got {n_components})")
    if fit_sample <= N_NEIGHBORS:
        raise ValueError(f"fit_sample must exceed {N_NEIGHBORS} (got {fit_sample})")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (points x dimensions), got shape {X.shape}")
    n = len(X)
    if n <= N_NEIGHBORS:
        coords = _pca_coordinates(X, n_components)
        _report(on_progress, 1.0)
        return coords

    import umap  # a heavy import (numba); only layouts and HDBSCAN's reduction need it

    reducer = umap.UMAP(
        n_components=n_components, n_neighbors=N_NEIGHBORS, min_dist=MIN_DIST, metric=METRIC,
        random_state=seed, transform_seed=seed,
    )
    coords = np.empty((n, n_components), dtype=np.float32)
    with warnings.catch_warnings():
        # UMAP warns that random_state forces one thread; determinism is the point.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        if n <= fit_sample:
            coords[:] = reducer.fit_transform(X)
            _report(on_progress, 1.0)
            return coords
        landmarks = np.zeros(n, dtype=bool)
        landmarks[np.random.default_rng(seed).choice(n, size=fit_sample, replace=False)] = True
        coords[landmarks] = reducer.fit(X[landmarks]).embedding_
        rest = np.flatnonzero(~landmarks)
        _report(on_progress, fit_sample / n)
        for start in range(0, len(rest), chunk_size):
            rows = rest[start : start + chunk_size]
            coords[rows] = reducer.transform(X[rows])
            _report(on_progress, (fit_sample + start + len(rows)) / n)
    return coords


def warm_up() -> None:
    """Compile UMAP's numba code paths (fit and transform) on a tiny random input, so the
    first real layout does not pay the JIT cost."""
    X = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    project(X, 2, fit_sample=100, chunk_size=100)


def _pca_coordinates(X: np.ndarray, n_components: int) -> np.ndarray:
    n, d = X.shape
    coords = np.zeros((n, n_components), dtype=np.float32)
    usable = min(n - 1, d, n_components)  # PCA finds at most n-1 directions
    if usable >= 1 and np.ptp(X, axis=0).any():
        coords[:, :usable] = PCA(n_components=usable, random_state=0).fit_transform(X)
    return coords


def _report(on_progress: Callable[[float], None] | None, fraction: float) -> None:
    if on_progress is not None:
        on_progress(min(1.0, fraction))
