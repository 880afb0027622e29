"""Internal quality metrics of a labelling, computed on the clustered (non-noise) points.

Each metric is None, not an exception, when it is undefined: fewer than 2 clusters, or
every point its own cluster. Silhouette is O(m^2) in the points it sees, so it is computed
on a seeded sample (10,000 points by default: ~1 s for 384-d); Davies-Bouldin and
Calinski-Harabasz are linear and use every clustered point. All three are euclidean,
the geometry the centroids are reported in.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import davies_bouldin_score, silhouette_score

from .results import compute_centroids, distances_to_centroids

__all__ = ["SILHOUETTE_SAMPLE", "clustering_metrics"]

SILHOUETTE_SAMPLE = 10_000


def clustering_metrics(
    X: np.ndarray,
    labels: np.ndarray,
    seed: int = 42,
    *,
    silhouette_sample: int = SILHOUETTE_SAMPLE,
) -> dict[str, float | None]:
    """``{"silhouette_score", "davies_bouldin_index", "calinski_harabasz_score"}``,
    each a float or None, over the points whose label is not -1."""
    labels = np.asarray(labels).ravel()
    if len(labels) != len(X):
        raise ValueError(f"labels ({len(labels)}) and embeddings ({len(X)}) differ in length")
    clustered = labels >= 0
    X = np.asarray(X, dtype=np.float32)
    # Without noise, score X itself: a masked copy would double the memory of a large run.
    Xc, lc = (X, labels) if clustered.all() else (X[clustered], labels[clustered])
    result: dict[str, float | None] = {
        "silhouette_score": None,
        "davies_bouldin_index": None,
        "calinski_harabasz_score": None,
    }
    if not _scorable(lc):
        return result
    result["davies_bouldin_index"] = _finite(davies_bouldin_score(Xc, lc))
    result["calinski_harabasz_score"] = _finite(calinski_harabasz(Xc, lc))

    # Sample ourselves (rather than silhouette_score's sample_size) so a sample that
    # misses all but one cluster yields None instead of raising.
    if len(lc) > silhouette_sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(lc), size=silhouette_sample, replace=False))
        Xc, lc = Xc[rows], lc[rows]
    if _scorable(lc):
        result["silhouette_score"] = _finite(silhouette_score(Xc, lc))
    return result


def _scorable(labels: np.ndarray) -> bool:
    n_labels = len(np.unique(labels))
    return 2 <= n_labels <= len(labels) - 1


def _finite(value: float) -> float | None:
    # Calinski-Harabasz is inf when every cluster is a set of identical points.
    value = float(value)
    return value if math.isfinite(value) else None


def calinski_harabasz(X: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's Calinski-Harabasz score, in chunks: its implementation makes a
    float64 copy of X (2x the dataset for float32 input); this one adds a few MB.

    Expects labels 0..k-1 without noise (what the caller passes)."""
    centroids = compute_centroids(X, labels)
    counts = centroids.num_members.astype(np.float64)
    vectors = centroids.vectors.astype(np.float64)
    n, k = len(labels), len(counts)
    mean = counts @ vectors / n
    between = float(counts @ ((vectors - mean) ** 2).sum(axis=1))
    within = float(np.square(distances_to_centroids(X, labels, centroids), dtype=np.float64).sum())
    return 1.0 if within == 0.0 else between * (n - k) / (within * (k - 1))
