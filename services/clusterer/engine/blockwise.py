"""K-means, centroids, distances and metrics as per-block partial results plus a
reduction: what the Ray engine (services/clusterer/ray_job.py) runs, one task per
block of a run's rows, so that no process holds the whole matrix.

Arrays in, arrays out (no I/O, no Ray). Every partial is a sum or a count, so the
reduction does not depend on the order blocks come back in, nor on how the rows were
cut into blocks; rows are identified by document id outside (never by position).

    k-means   init_centres (exact k-means on a seeded sample)
              -> repeat: lloyd_partial per block, lloyd_update on the driver
    results   label_partial per block: labels, and member sums/counts -> member means
              (the reported centroids, the mean of each cluster's members as in
              engine.results.compute_centroids); size_order renumbers largest first;
              distance_partial per block: distances and per-cluster distance sums
    metrics   davies_bouldin, calinski_harabasz from those sums; silhouette stays
              engine.metrics' sampled one, on a seeded sample gathered from the blocks
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .results import NOISE

__all__ = [
    "LloydPartial",
    "MemberPartial",
    "DistancePartial",
    "calinski_harabasz",
    "davies_bouldin",
    "distance_partial",
    "label_partial",
    "lloyd_partial",
    "lloyd_update",
    "nearest",
    "size_order",
]

_CHUNK_ROWS = 8_192  # as engine.results: the temporaries of a chunk stay ~25 MB at 384-d


def nearest(X: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centre (euclidean) and the squared distance to it."""
    X = np.asarray(X, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float32)
    c2 = np.einsum("ij,ij->i", centres, centres)
    labels = np.empty(len(X), dtype=np.int32)
    sq = np.empty(len(X), dtype=np.float32)
    for start in range(0, len(X), _CHUNK_ROWS):
        block = X[start:start + _CHUNK_ROWS]
        # |x-c|^2 = |x|^2 - 2x.c + |c|^2; the argmin needs only the last two terms
        partial = c2[None, :] - 2.0 * (block @ centres.T)
        best = partial.argmin(axis=1)
        labels[start:start + len(block)] = best
        x2 = np.einsum("ij,ij->i", block, block)
        sq[start:start + len(block)] = np.maximum(partial[np.arange(len(block)), best] + x2, 0.0)
    return labels, sq


@dataclass
class LloydPartial:
    sums: np.ndarray  # (k, d) float64: sum of the rows nearest each centre
    counts: np.ndarray  # (k,) int64
    inertia: float  # sum of squared distances to the nearest centre

    def __add__(self, other: "LloydPartial") -> "LloydPartial":
        return LloydPartial(self.sums + other.sums, self.counts + other.counts, self.inertia + other.inertia)


def _sums_by_label(X: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label row sums (float64, so a million float32 rows lose nothing) and counts;
    one (k x rows) one-hot product per chunk, far faster than np.add.at."""
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    for start in range(0, len(X), _CHUNK_ROWS):
        lab = labels[start:start + _CHUNK_ROWS]
        rows = np.flatnonzero(lab >= 0)
        if len(rows):
            onehot = np.zeros((k, len(rows)), dtype=np.float64)
            onehot[lab[rows], np.arange(len(rows))] = 1.0
            sums += onehot @ X[start:start + _CHUNK_ROWS][rows].astype(np.float64)
    counts = np.bincount(labels[labels >= 0], minlength=k).astype(np.int64)
    return sums, counts


def lloyd_partial(X: np.ndarray, centres: np.ndarray) -> LloydPartial:
    """One block's share of a Lloyd step."""
    labels, sq = nearest(X, centres)
    sums, counts = _sums_by_label(np.asarray(X, dtype=np.float32), labels, len(centres))
    return LloydPartial(sums, counts, float(sq.sum(dtype=np.float64)))


def lloyd_update(centres: np.ndarray, total: LloydPartial) -> tuple[np.ndarray, float]:
    """The next centres from the reduced partials, and how far they moved (the sum of
    squared shifts, what scikit-learn compares with its tolerance). A centre nobody
    chose keeps its place rather than becoming NaN."""
    centres = np.asarray(centres, dtype=np.float32)
    moved = total.counts > 0
    new = centres.copy()
    new[moved] = (total.sums[moved] / total.counts[moved, None]).astype(np.float32)
    return new, float(((new.astype(np.float64) - centres) ** 2).sum())


@dataclass
class MemberPartial:
    labels: np.ndarray  # (n,) int32: nearest centre, in the block's row order
    sums: np.ndarray  # (k, d) float64
    counts: np.ndarray  # (k,) int64


def label_partial(X: np.ndarray, centres: np.ndarray) -> MemberPartial:
    """A block's final labels and the sums that make the members' means."""
    labels, _ = nearest(X, centres)
    sums, counts = _sums_by_label(np.asarray(X, dtype=np.float32), labels, len(centres))
    return MemberPartial(labels, sums, counts)


def size_order(counts: np.ndarray) -> np.ndarray:
    """`new_id[old]`: clusters renumbered 0..k-1 largest first (ties: the lower old id),
    as engine.algorithms.relabel_by_size numbers them; empty clusters get -1 (noise
    has none, so they simply vanish)."""
    counts = np.asarray(counts)
    order = np.lexsort((np.arange(len(counts)), -counts))
    new_id = np.full(len(counts), NOISE, dtype=np.int32)
    kept = order[counts[order] > 0]
    new_id[kept] = np.arange(len(kept), dtype=np.int32)
    return new_id


@dataclass
class DistancePartial:
    distances: np.ndarray  # (n,) float32, NaN for noise
    dist_sums: np.ndarray  # (k,) float64: sum of distances to the own centroid
    sq_sums: np.ndarray  # (k,) float64: sum of squared distances


def distance_partial(X: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> DistancePartial:
    """Each row's euclidean distance to its own cluster's centroid (NaN for noise), and
    the per-cluster sums Davies-Bouldin and Calinski-Harabasz need."""
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    k = len(centroids)
    out = np.full(len(X), np.nan, dtype=np.float32)
    for start in range(0, len(X), _CHUNK_ROWS):
        lab = labels[start:start + _CHUNK_ROWS]
        rows = np.flatnonzero(lab >= 0)
        out[start + rows] = np.linalg.norm(X[start:start + _CHUNK_ROWS][rows] - centroids[lab[rows]], axis=1)
    keep = labels >= 0
    d = out[keep].astype(np.float64)
    return DistancePartial(out, np.bincount(labels[keep], weights=d, minlength=k),
                           np.bincount(labels[keep], weights=d * d, minlength=k))


def davies_bouldin(centroids: np.ndarray, counts: np.ndarray, dist_sums: np.ndarray) -> float | None:
    """scikit-learn's Davies-Bouldin index from the centroids and each cluster's summed
    distance to its centroid (None with fewer than 2 clusters)."""
    if len(centroids) < 2:
        return None
    intra = np.asarray(dist_sums, dtype=np.float64) / np.maximum(counts, 1)
    c = np.asarray(centroids, dtype=np.float64)
    gaps = np.sqrt(np.maximum(((c[:, None, :] - c[None, :, :]) ** 2).sum(axis=2), 0.0))
    if np.allclose(intra, 0) or np.allclose(gaps, 0):
        return 0.0
    gaps[gaps == 0] = np.inf
    scores = (intra[:, None] + intra[None, :]) / gaps
    np.fill_diagonal(scores, -np.inf)
    return float(np.mean(scores.max(axis=1)))


def calinski_harabasz(centroids: np.ndarray, counts: np.ndarray, sq_sums: np.ndarray) -> float | None:
    """Calinski-Harabasz from the centroids, sizes and per-cluster squared distances
    (engine.metrics.calinski_harabasz over the same sums; None with < 2 clusters or as
    many clusters as points)."""
    counts = np.asarray(counts, dtype=np.float64)
    n, k = counts.sum(), len(counts)
    if k < 2 or n <= k:
        return None
    c = np.asarray(centroids, dtype=np.float64)
    mean = counts @ c / n
    between = float(counts @ ((c - mean) ** 2).sum(axis=1))
    within = float(np.sum(sq_sums))
    return 1.0 if within == 0.0 else between * (n - k) / (within * (k - 1))
