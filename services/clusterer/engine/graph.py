"""k-nearest-neighbour graphs and Leiden communities over them (arrays in, arrays out).

``knn(X, k, metric, seed)`` returns each point's k nearest other points and their
distances; ``knn_graph_weights`` turns distances into similarities; ``leiden`` runs
leidenalg on the symmetrised graph and returns one community per point.

Exact (brute force) neighbours up to ``EXACT_KNN_MAX_POINTS``, pynndescent's approximate
ones above: brute force is quadratic (50k: 2.5e9 distances, about a minute), NNDescent is
about linear and its recall (0.86 at 50k) is plenty for a community graph, whose
communities are what count, not each edge (figures: docs/engine-measurements.md).
The clusterer compiles pynndescent's numba code at start-up (``layout.warm_up`` runs
UMAP, which uses it), so a user's run does not pay the JIT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

__all__ = ["EXACT_KNN_MAX_POINTS", "LeidenResult", "knn", "leiden", "local_scaling_weights", "similarity_weights"]

EXACT_KNN_MAX_POINTS = 8_000

_PARTITIONS = {
    "RBConfiguration": "RBConfigurationVertexPartition",
    "modularity": "ModularityVertexPartition",
    "CPM": "CPMVertexPartition",
}


def knn(X: np.ndarray, k: int, metric: str = "cosine", seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other points of every row of ``X``: (indices, distances), both
    (n, k), nearest first. ``metric`` is "cosine" (1 - cosine similarity) or "euclidean"."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f'metric must be "cosine" or "euclidean" (got {metric!r})')
    n = len(X)
    if not 1 <= k < n:
        raise ValueError(f"n_neighbors ({k}) must be between 1 and the number of points - 1 ({n - 1}); lower it")
    if n <= EXACT_KNN_MAX_POINTS:
        dist, idx = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric=metric).fit(X).kneighbors(X)
    else:
        import pynndescent  # ships with umap-learn; heavy import, needed only here

        index = pynndescent.NNDescent(X, n_neighbors=k + 1, metric=metric, random_state=seed, n_jobs=1)
        idx, dist = index.neighbor_graph
    return _drop_self(idx, dist, k)


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each point from its own neighbour list (duplicates may push it off the
    first place, so it is found by value), keeping k neighbours per row."""
    n = len(idx)
    rows = np.arange(n)[:, None]
    is_self = idx == rows
    # Rows where the point itself is absent (exact duplicates filled its place): drop the last.
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    out_idx = idx[keep].reshape(n, k)
    out_dist = dist[keep].reshape(n, k)
    return out_idx.astype(np.int64), np.maximum(out_dist, 0).astype(np.float32)


def similarity_weights(dist: np.ndarray, metric: str) -> np.ndarray:
    """Edge weights from distances: 1 - cosine distance (floored at a tiny positive value,
    so a far neighbour still links weakly), or 1 / (1 + euclidean distance)."""
    if metric == "cosine":
        return np.clip(1.0 - dist, 1e-6, None)
    return 1.0 / (1.0 + dist)


def local_scaling_weights(idx: np.ndarray, dist: np.ndarray, scale_neighbor: int = 7) -> np.ndarray:
    """Self-tuning edge weights (Zelnik-Manor and Perona, NIPS 2004): exp(-d_ij^2 /
    (s_i s_j)), where s_i is point i's distance to its ``scale_neighbor``-th nearest
    neighbour. Each point's own neighbourhood sets its scale, so an edge inside a dense
    region and one inside a sparse region weigh alike, and an edge across the gap
    between them weighs little; a single ``1 - d`` scale favours the dense regions.
    Floored at a tiny positive value, like ``similarity_weights``."""
    n, k = dist.shape
    if not 1 <= scale_neighbor <= k:
        raise ValueError(f"scale_neighbor ({scale_neighbor}) must be between 1 and the neighbours per point ({k})")
    scale = np.maximum(dist[:, scale_neighbor - 1].astype(np.float64), 1e-6)
    weights = np.exp(-(dist.astype(np.float64) ** 2) / (scale[:, None] * scale[idx]))
    return np.clip(weights, 1e-6, None).astype(np.float32)


@dataclass(frozen=True)
class LeidenResult:
    labels: np.ndarray  # (n,) community per point, 0..c-1
    quality: float  # the objective's value for this partition (higher is better)


def leiden(
    idx: np.ndarray,
    weights: np.ndarray,
    *,
    resolution: float = 1.0,
    objective_function: str = "RBConfiguration",
    n_iterations: int = -1,
    seed: int = 42,
) -> LeidenResult:
    """Leiden communities of the undirected graph whose edge i -> idx[i, j] weighs
    weights[i, j] (a pair listed both ways keeps the larger weight)."""
    import igraph as ig
    import leidenalg

    if objective_function not in _PARTITIONS:
        raise ValueError(f"objective_function must be one of {sorted(_PARTITIONS)} (got {objective_function!r})")
    n, k = idx.shape
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    dst = idx.ravel()
    w = weights.ravel().astype(np.float64)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    # One edge per unordered pair, the larger weight: sort by (pair, -weight), keep firsts.
    order = np.lexsort((-w, hi, lo))
    lo, hi, w = lo[order], hi[order], w[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    edges = np.column_stack([lo[first], hi[first]])
    graph = ig.Graph(n=n, edges=edges, directed=False)
    partition_type = getattr(leidenalg, _PARTITIONS[objective_function])
    kwargs = {} if objective_function == "modularity" else {"resolution_parameter": float(resolution)}
    partition = leidenalg.find_partition(
        graph, partition_type, weights=w[first].tolist(), n_iterations=n_iterations, seed=int(seed), **kwargs
    )
    return LeidenResult(labels=np.asarray(partition.membership, dtype=np.int64), quality=float(partition.quality()))
