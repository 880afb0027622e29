"""2-D / 3-D coordinates for the scatter view: UMAP, fitted on a sample when large.

UMAP (n_neighbors 15, min_dist 0.1, cosine, fixed random_state) is fitted on all points up
to ``UMAP_FIT_MAX_POINTS``; above that it is fitted on a seeded sample (the landmarks) and
the other points are placed with ``UMAP.transform`` in chunks: a direct fit grows faster
than linearly, while fit-on-landmarks plus transform is linear in the rest (1M points in
about 3 minutes on a 2-core box; docs/engine-measurements.md has the figures).

numba JIT: each code path compiles on its first use in a process, and the neighbour
descent's compiled code is not cached across processes, so a worker should call
``warm_up()`` once at start (tens of CPU seconds), not on a user's run.

Fewer points than a UMAP neighbourhood (n <= 15) get PCA coordinates (zero-padded when
there are fewer directions than components), so tiny inputs never crash.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances

__all__ = ["TRANSFORM_CHUNK", "UMAP_FIT_MAX_POINTS", "Similarity", "align_to_previous", "fit_landmarks",
           "fit_projection", "init_graph_transform", "project", "register", "transform_rows", "umap_embedding", "warm_up"]

UMAP_FIT_MAX_POINTS = 20_000
# Points placed per transform call: 20k took as long as 50k in all (100k points: 24-26 s)
# and kept the layout's peak near 150 MB instead of 280 MB above the dataset.
TRANSFORM_CHUNK = 20_000
N_NEIGHBORS = 15
MIN_DIST = 0.1
METRIC = "cosine"
EXACT_NEIGHBOURS_BELOW = 4_096  # umap-learn's own small-data switch; 4k x 4k float32 = 64 MB


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
    _check_components(n_components)
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

    if n <= fit_sample:
        coords = umap_embedding(X, n_components, metric=METRIC, min_dist=MIN_DIST, seed=seed)
        _report(on_progress, 1.0)
        return coords

    return _landmark_layout(X, n_components, seed, fit_sample, chunk_size, on_progress)[0]


def fit_projection(
    X: np.ndarray,
    n_components: int = 2,
    seed: int = 42,
    *,
    fit_sample: int = UMAP_FIT_MAX_POINTS,
    chunk_size: int = TRANSFORM_CHUNK,
    on_progress: Callable[[float], None] | None = None,
):
    """Coordinates like `project`'s, always through a UMAP model that can place new
    points later (`fit_landmarks` on all rows up to `fit_sample`, on a seeded sample
    above), returned with that model: what layout_stability "transform" keeps for the
    next run. Up to `fit_sample` rows `project` fits without keeping a model (exact
    neighbours when small), so the two layouts of one input differ."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    _check_components(n_components)
    if X.ndim != 2 or len(X) <= N_NEIGHBORS:
        raise ValueError(f"a fitted projection needs a 2-D array of more than {N_NEIGHBORS} rows, got shape {X.shape}")
    return _landmark_layout(X, n_components, seed, min(fit_sample, len(X)), chunk_size, on_progress)


def _check_components(n_components: int) -> None:
    if n_components not in (2, 3):
        raise ValueError(f"vis_n_components must be 2 or 3 (got {n_components})")


def _landmark_layout(X: np.ndarray, n_components: int, seed: int, fit_sample: int, chunk_size: int,
                     on_progress: Callable[[float], None] | None):
    n = len(X)
    coords = np.empty((n, n_components), dtype=np.float32)
    landmarks = np.zeros(n, dtype=bool)
    landmarks[np.random.default_rng(seed).choice(n, size=fit_sample, replace=False)] = True
    rest = np.flatnonzero(~landmarks)
    reducer = fit_landmarks(X[landmarks], n_components, seed)
    coords[landmarks] = reducer.embedding_
    _report(on_progress, fit_sample / n)
    for start in range(0, len(rest), chunk_size):
        rows = rest[start : start + chunk_size]
        coords[rows] = transform_rows(reducer, X[rows], chunk_size)
        _report(on_progress, (fit_sample + start + len(rows)) / n)
    return coords, reducer


def fit_landmarks(sample: np.ndarray, n_components: int, seed: int):
    """UMAP fitted on a sample (the landmarks) with the index `transform_rows` needs:
    the first half of a large layout. The Ray engine fits it in one task and
    transforms the blocks in parallel with it."""
    import umap  # a heavy import (numba); only layouts and HDBSCAN's reduction need it

    if len(sample) <= N_NEIGHBORS:
        raise ValueError(f"a landmark fit needs more than {N_NEIGHBORS} points (got {len(sample)})")
    reducer = umap.UMAP(
        n_components=n_components, n_neighbors=N_NEIGHBORS, min_dist=MIN_DIST, metric=METRIC,
        random_state=seed, transform_seed=seed,
        # transform() needs the nearest-neighbour-descent index, also for a small fit.
        force_approximation_algorithm=True,
    )
    with _quiet_umap():
        reducer.fit(np.ascontiguousarray(sample, dtype=np.float32))
    return reducer


def transform_rows(reducer, X: np.ndarray, chunk_size: int = TRANSFORM_CHUNK) -> np.ndarray:
    """Rows placed on a `fit_landmarks` layout, in equal chunks of at most `chunk_size`
    (float32)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    out = np.empty((len(X), reducer.n_components), dtype=np.float32)
    # Equal chunks, not chunk_size and a remainder: umap gives a transform of at most
    # 10,000 points 100 epochs (30 above), so a 65,536-row block's last 5,536 points
    # cost 3x per point and were placed with other epochs than the rest.
    chunks = max(1, math.ceil(len(X) / chunk_size))
    size = max(1, math.ceil(len(X) / chunks))
    _install_init_graph_transform()
    with _quiet_umap():
        for start in range(0, len(X), size):
            out[start : start + size] = reducer.transform(X[start : start + size])
    return out


def umap_embedding(
    X: np.ndarray,
    n_components: int,
    *,
    metric: str,
    min_dist: float,
    seed: int,
    n_neighbors: int = N_NEIGHBORS,
    n_epochs: int | None = None,
    init: str = "spectral",
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """UMAP fitted on all of ``X`` (no transform needed later), float32.

    ``neighbours`` (indices, distances; each row's own point first, as UMAP computes
    them) skips UMAP's own neighbour search when the caller already has the graph.

    Below 4,096 points umap-learn 0.5.12 computes the exact distances by calling its
    numba metric from Python once per pair (2k points: 4M calls, 11 s of a 13.6 s fit).
    Computing them with sklearn and passing metric="precomputed" gives the same exact
    neighbours in a fraction of a second; larger inputs use UMAP's neighbour descent.
    """
    import umap  # a heavy import (numba); only layouts and HDBSCAN's reduction need it

    small = len(X) < EXACT_NEIGHBOURS_BELOW and neighbours is None
    data = np.maximum(pairwise_distances(X, metric=metric), 0).astype(np.float32) if small else X
    reducer = umap.UMAP(
        n_components=n_components, n_neighbors=min(n_neighbors, len(X) - 1), min_dist=min_dist,
        metric="precomputed" if small else metric, n_epochs=n_epochs, random_state=seed, init=init,
        precomputed_knn=(neighbours[0], neighbours[1], None) if neighbours is not None else (None, None, None),
    )
    with _quiet_umap():
        return np.ascontiguousarray(reducer.fit_transform(data), dtype=np.float32)


def init_graph_transform(graph, embedding: np.ndarray) -> np.ndarray:
    """umap-learn 0.5.12's `umap_.init_graph_transform` (the new points' initial places:
    each the weighted mean of its landmarks' places, a landmark's own place where a
    weight is 1, NaN without neighbours) with the same float32 arithmetic in the same
    order, vectorised: the original slices the CSR graph once per row in Python, 6.9 of
    a 16.3 s transform of 20K points (cProfile). Equal bit for bit
    (tests/unit/test_engine_layout.py compares them)."""
    graph = graph.tocsr()
    n = graph.shape[0]
    counts = np.diff(graph.indptr)
    rows = np.repeat(np.arange(n), counts)
    data = graph.data
    # each row's sum as numpy sums one row (pairwise by length): rows of one length at once
    sums = np.zeros(n, dtype=np.result_type(data.dtype, np.float32))
    for length in np.unique(counts[counts > 0]):
        which = np.flatnonzero(counts == length)
        at = graph.indptr[which][:, None] + np.arange(length)
        sums[which] = data[at].sum(axis=1)
    result = np.zeros((n, embedding.shape[1]), dtype=np.float32)
    np.add.at(result, rows, (data / sums[rows])[:, None] * embedding[graph.indices])
    ones = np.flatnonzero(data == 1)
    if len(ones):  # the first weight of 1 in a row: that landmark's place, nothing added
        first = ones[np.unique(rows[ones], return_index=True)[1]]
        result[rows[first]] = embedding[graph.indices[first]]
    result[counts == 0] = np.nan
    return result


UMAP_INIT_GRAPH_TRANSFORM = None  # umap's own, once ours replaced it


def _install_init_graph_transform() -> None:
    """UMAP.transform calls umap_.init_graph_transform by its module-global name: ours
    replaces it for the umap-learn release it was checked against (another release
    keeps its own)."""
    global UMAP_INIT_GRAPH_TRANSFORM
    import umap
    import umap.umap_ as umap_module

    if getattr(umap, "__version__", "") == "0.5.12" and umap_module.init_graph_transform is not init_graph_transform:
        UMAP_INIT_GRAPH_TRANSFORM = umap_module.init_graph_transform
        umap_module.init_graph_transform = init_graph_transform


@contextmanager
def _quiet_umap():
    with warnings.catch_warnings():
        # UMAP warns that random_state forces one thread; determinism is the point.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        # We never call inverse_transform.
        warnings.filterwarnings("ignore", message="using precomputed metric; inverse_transform")
        yield


def warm_up() -> None:
    """Compile UMAP's numba code paths once (a few tiny fits and a transform), so the first
    real layout or HDBSCAN reduction in a worker does not pay the JIT cost."""
    rng = np.random.default_rng(0)
    small = rng.normal(size=(200, 8)).astype(np.float32)
    project(small, 2)  # exact-neighbour path
    project(small, 2, fit_sample=100, chunk_size=100)  # neighbour descent + transform
    umap_embedding(  # neighbour descent, euclidean (HDBSCAN's reduction on >= 4,096 points)
        rng.normal(size=(EXACT_NEIGHBOURS_BELOW, 8)).astype(np.float32), 2,
        metric="euclidean", min_dist=0.0, seed=0, n_epochs=10,
    )


ALIGN_MIN_SHARED = 10  # fewer shared documents than this: the fit would follow noise


@dataclass(frozen=True)
class Similarity:
    """x -> scale * x @ rotation + shift: a rotation or reflection (orthogonal
    `rotation`), one scale and a shift, for row vectors of coordinates."""

    rotation: np.ndarray  # (d, d), orthogonal
    scale: float
    shift: np.ndarray  # (d,)

    @classmethod
    def identity(cls, dimensions: int) -> "Similarity":
        return cls(np.eye(dimensions), 1.0, np.zeros(dimensions))

    def apply(self, coords: np.ndarray) -> np.ndarray:
        out = coords.astype(np.float64) @ (self.scale * self.rotation) + self.shift
        return out.astype(coords.dtype, copy=False)


def register(
    coords: np.ndarray, ids: np.ndarray, previous: np.ndarray, previous_ids: np.ndarray,
    min_shared: int = ALIGN_MIN_SHARED,
) -> tuple[Similarity | None, int, str]:
    """The similarity transform (orthogonal Procrustes with one scale; Umeyama 1991,
    reflections allowed: UMAP's layouts mirror freely between fits) that maps the shared
    documents' new coordinates closest, in least squares, onto their previous ones.
    Rows are matched by id (numpy arrays or polars Series of strings), never by
    position; ids are unique within a layout.

    Returns (transform, shared documents, reason); the transform is None, with the
    reason, when there is nothing sound to fit.
    """
    if previous.shape[1:] != coords.shape[1:]:
        return None, 0, f"the previous layout has {previous.shape[1]} dimensions, this one {coords.shape[1]}"
    new_rows, old_rows = _shared_rows(ids, previous_ids)
    shared = len(new_rows)
    if shared < min_shared:
        return None, shared, f"{shared} shared documents with the previous run (fewer than {min_shared})"
    A, B = coords[new_rows].astype(np.float64), previous[old_rows].astype(np.float64)
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        return None, shared, "the shared documents have coordinates that are not finite"
    mean_a, mean_b = A.mean(axis=0), B.mean(axis=0)
    A0, B0 = A - mean_a, B - mean_b
    spread = float((A0 ** 2).sum())
    if spread == 0.0 or not (B0 ** 2).sum():
        return None, shared, "the shared documents sit on one point"
    U, S, Vt = np.linalg.svd(A0.T @ B0)
    rotation, scale = U @ Vt, float(S.sum()) / spread
    return Similarity(rotation, scale, mean_b - scale * mean_a @ rotation), shared, \
        f"aligned on {shared} shared documents"


def _shared_rows(ids, previous_ids) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the documents in both layouts, paired by id: a hash join (polars;
    with numpy's sort-based intersect1d of a million Python strings, aligning 1M points
    took 23 s instead of 6, bench/layout_stability.py)."""
    def rows(values, name: str) -> pl.DataFrame:
        column = values.cast(pl.String) if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.String)
        return pl.DataFrame({"id": column.alias("id"), name: np.arange(len(column))})

    pairs = rows(ids, "new").join(rows(previous_ids, "old"), on="id", how="inner")
    return pairs["new"].to_numpy(), pairs["old"].to_numpy()


def align_to_previous(
    coords: np.ndarray, ids: np.ndarray, previous: np.ndarray, previous_ids: np.ndarray,
    min_shared: int = ALIGN_MIN_SHARED,
) -> tuple[np.ndarray, bool, str]:
    """``coords`` registered onto a previous run's layout (`register`), so the map keeps
    its shape: the transform fitted on the shared documents, applied to every point.

    Returns (coordinates, applied, reason); unapplied, the coordinates are returned as
    they were, with the reason.
    """
    transform, _, reason = register(coords, ids, previous, previous_ids, min_shared)
    if transform is None:
        return coords, False, reason
    return transform.apply(coords), True, reason


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
