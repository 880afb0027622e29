"""What a labelling means for the stored results: centroids, member distances, ids.

A group of points (docs/vocabulary.md) is an int label inside the engine (0..k-1, -1 for
noise); ``group_key`` (from contracts/, where the vocabulary lives) makes its group id,
"cl_3", "cl_-1" for noise, and ``parse_group_key`` inverts it.

All functions are vectorised and chunked so they stay within a few hundred MB for
1,000,000 x 384 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from contracts.api import NOISE_LABEL, group_key, parse_group_key

__all__ = [
    "NOISE",
    "REPRESENTATIVES",
    "CentroidSimilarity",
    "Centroids",
    "assign_to_centroids",
    "centroid_similarity",
    "group_key",
    "compute_centroids",
    "distances_to_centroids",
    "parse_group_key",
]

NOISE = NOISE_LABEL  # the engine's name for it
# 8k x 384 float32 = 12.5 MB per temporary (25 MB in float64): the peak stays near the
# dataset itself even at 1M points, and the loop overhead is still negligible.
_CHUNK_ROWS = 8_192
# How many members nearest its centroid a cluster lists as its representatives.
REPRESENTATIVES = 5


@dataclass(frozen=True)
class Centroids:
    """Per-group summaries, row i describing the group labelled ``group_labels[i]`` (= i)."""

    group_labels: np.ndarray  # int32 (k,), 0..k-1
    vectors: np.ndarray  # float32 (k, d): mean of the members
    num_members: np.ndarray  # int64 (k,)
    variance: np.ndarray  # float32 (k,): mean squared euclidean distance to the centroid
    noise_count: int  # points labelled -1; they have no centroid

    @property
    def n_clusters(self) -> int:
        return len(self.group_labels)

    def records(self, *, include_vectors: bool = True, include_noise: bool = False) -> list[dict[str, Any]]:
        """JSON-ready rows: ``{"cluster_id": "cl_0", "num_members", "variance",
        "centroid_vector"}``. With ``include_noise`` and any noise, a last row
        ``{"cluster_id": "cl_-1", "num_members": noise_count, "variance": None,
        "centroid_vector": None}`` is appended."""
        rows: list[dict[str, Any]] = []
        for i, cid in enumerate(self.group_labels):
            row: dict[str, Any] = {
                "cluster_id": group_key(cid),
                "num_members": int(self.num_members[i]),
                "variance": float(self.variance[i]),
            }
            if include_vectors:
                row["centroid_vector"] = self.vectors[i].tolist()
            rows.append(row)
        if include_noise and self.noise_count:
            row = {"cluster_id": group_key(NOISE), "num_members": self.noise_count, "variance": None}
            if include_vectors:
                row["centroid_vector"] = None
            rows.append(row)
        return rows


def compute_centroids(X: np.ndarray, labels: np.ndarray) -> Centroids:
    """Mean vector, member count and variance of each cluster 0..max(labels).

    Expects labels as ``run_clustering`` returns them (0..k-1 contiguous, -1 noise).
    """
    X = np.asarray(X, dtype=np.float32)
    labels = _check_labels(X, labels)
    k = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    clustered = np.flatnonzero(labels >= 0)
    counts = np.bincount(labels[clustered], minlength=k).astype(np.int64)
    if k and (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()[:5]
        raise ValueError(f"labels must be contiguous 0..k-1; clusters {missing} have no members")
    # A sparse one-hot (k x rows) product sums each cluster's rows; float64 accumulation
    # so a million float32 rows do not lose precision, chunked so the float64 copy is small.
    sums = np.zeros((k, X.shape[1]))
    for start in range(0, len(X), _CHUNK_ROWS):
        lab = labels[start : start + _CHUNK_ROWS]
        rows = np.flatnonzero(lab >= 0)
        if k and len(rows):
            onehot = sp.csr_matrix((np.ones(len(rows)), (lab[rows], rows)), shape=(k, len(lab)))
            sums += onehot @ X[start : start + _CHUNK_ROWS].astype(np.float64)
    vectors = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    sq = distances_to_centroids(X, labels, vectors) ** 2
    variance = np.bincount(labels[clustered], weights=sq[clustered], minlength=k) / np.maximum(counts, 1)
    return Centroids(
        group_labels=np.arange(k, dtype=np.int32),
        vectors=vectors,
        num_members=counts,
        variance=variance.astype(np.float32),
        noise_count=int(len(X) - len(clustered)),
    )


def distances_to_centroids(
    X: np.ndarray, labels: np.ndarray, centroids: np.ndarray | Centroids, *, metric: str = "euclidean"
) -> np.ndarray:
    """Each point's distance to its own cluster's centroid (float32; NaN for noise).

    ``metric="euclidean"`` gives the L2 distance (the API's ``distance_to_centroid``);
    ``metric="cosine"`` gives the cosine *similarity* to the centroid instead.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f'metric must be "euclidean" or "cosine" (got {metric!r})')
    vectors = centroids.vectors if isinstance(centroids, Centroids) else np.asarray(centroids, dtype=np.float32)
    X = np.asarray(X, dtype=np.float32)
    labels = _check_labels(X, labels)
    out = np.full(len(X), np.nan, dtype=np.float32)
    if metric == "cosine":
        vectors = _unit_rows(vectors)
    for start in range(0, len(X), _CHUNK_ROWS):
        lab = labels[start : start + _CHUNK_ROWS]
        rows = np.flatnonzero(lab >= 0)
        block = X[start : start + _CHUNK_ROWS][rows]
        own = vectors[lab[rows]]
        if metric == "euclidean":
            out[start + rows] = np.linalg.norm(block - own, axis=1)
        else:
            out[start + rows] = np.einsum("ij,ij->i", _unit_rows(block), own)
    return out


@dataclass(frozen=True)
class CentroidSimilarity:
    """Each cluster's cosine similarity of its members to its centroid: count, sum and
    minimum, and its ``top`` members nearest the centroid (label, similarity, id).

    A partial result: ``a + b`` is the statistics of both row sets (sums add, minima
    take the lower, the nearest members are chosen again from both), whatever the
    order or the cut of the rows, so a Ray job reduces its blocks' partials the way a
    single process reduces its chunks'. ``top_ids`` are row positions until
    ``with_ids`` turns them into document ids.
    """

    counts: np.ndarray  # int64 (k,)
    sums: np.ndarray  # float64 (k,)
    mins: np.ndarray  # float64 (k,); +inf for a cluster without members (yet)
    top_labels: np.ndarray  # int64 (m,): cluster of each nearest member, at most `top` per cluster
    top_sims: np.ndarray  # float64 (m,)
    top_ids: np.ndarray  # (m,): row positions, or document ids after with_ids
    top: int = REPRESENTATIVES

    @property
    def n_clusters(self) -> int:
        return len(self.counts)

    @classmethod
    def empty(cls, k: int, top: int = REPRESENTATIVES) -> CentroidSimilarity:
        if k < 0 or top < 0:
            raise ValueError(f"k and top must be >= 0 (got k={k}, top={top})")
        return cls(np.zeros(k, np.int64), np.zeros(k), np.full(k, np.inf), np.zeros(0, np.int64),
                   np.zeros(0), np.zeros(0, np.int64), top)

    @classmethod
    def of(cls, similarity: np.ndarray, labels: np.ndarray, k: int, *, ids: np.ndarray | None = None,
           top: int = REPRESENTATIVES) -> CentroidSimilarity:
        """From each row's similarity to its own centroid and its label (0..k-1; noise,
        -1, is left out). ``ids`` name the rows in the nearest members (default: their
        positions)."""
        similarity = np.asarray(similarity, dtype=np.float64).ravel()
        labels = np.asarray(labels).ravel().astype(np.int64, copy=False)
        if len(similarity) != len(labels):
            raise ValueError(f"similarity ({len(similarity)}) and labels ({len(labels)}) differ in length")
        if labels.size and labels.max() >= k:
            raise ValueError(f"labels must be < k={k} (got {int(labels.max())})")
        ids = np.arange(len(labels), dtype=np.int64) if ids is None else np.asarray(ids)
        if len(ids) != len(labels):
            raise ValueError(f"ids ({len(ids)}) and labels ({len(labels)}) differ in length")
        members = np.flatnonzero(labels >= 0)
        lab, sim = labels[members], similarity[members]
        out = cls.empty(k, top)
        counts = np.bincount(lab, minlength=k).astype(np.int64)
        sums = np.bincount(lab, weights=sim, minlength=k)
        kept_ids = ids[members]
        order, starts, ends = _grouped(lab, sim, kept_ids, k)
        mins = out.mins.copy()
        filled = ends > starts
        mins[filled] = sim[order[ends[filled] - 1]]  # each group sorts by descending similarity
        keep = _first_of_each(lab, order, starts, top)
        return cls(counts, sums, mins, lab[keep], sim[keep], kept_ids[keep], top)

    def __add__(self, other: CentroidSimilarity) -> CentroidSimilarity:
        if other.n_clusters != self.n_clusters or other.top != self.top:
            raise ValueError(f"cannot add statistics of {other.n_clusters} clusters (top {other.top}) to "
                             f"{self.n_clusters} (top {self.top})")
        lab = np.concatenate([self.top_labels, other.top_labels])
        sim = np.concatenate([self.top_sims, other.top_sims])
        ids = np.concatenate([self.top_ids, other.top_ids])
        order, starts, _ = _grouped(lab, sim, ids, self.n_clusters)
        keep = _first_of_each(lab, order, starts, self.top)
        return CentroidSimilarity(self.counts + other.counts, self.sums + other.sums,
                                  np.minimum(self.mins, other.mins), lab[keep], sim[keep], ids[keep], self.top)

    def with_ids(self, id_of) -> CentroidSimilarity:
        """The same statistics with ``top_ids`` (row positions) replaced by
        ``id_of(positions)``, e.g. ``lambda p: ids.take(p).to_pylist()``."""
        named = np.empty(len(self.top_ids), dtype=object)
        named[:] = list(id_of(self.top_ids.astype(np.int64))) if len(self.top_ids) else []
        return CentroidSimilarity(self.counts, self.sums, self.mins, self.top_labels, self.top_sims, named,
                                  self.top)

    def records(self) -> list[dict[str, Any]]:
        """Cluster i's ``{"mean_cosine_similarity", "min_cosine_similarity",
        "representative_ids": [{"document_id", "similarity"}, ...]}`` (nearest first),
        for i in 0..k-1; None and [] for a cluster without members."""
        order = np.lexsort((self.top_ids, -self.top_sims, self.top_labels))
        reps: list[list[dict[str, Any]]] = [[] for _ in range(self.n_clusters)]
        for i in order:
            reps[int(self.top_labels[i])].append(
                {"document_id": str(self.top_ids[i]), "similarity": round(float(self.top_sims[i]), 6)})
        return [
            {"mean_cosine_similarity": round(float(self.sums[c] / self.counts[c]), 6) if self.counts[c] else None,
             "min_cosine_similarity": round(float(self.mins[c]), 6) if self.counts[c] else None,
             "representative_ids": reps[c]}
            for c in range(self.n_clusters)
        ]


def _grouped(lab: np.ndarray, sim: np.ndarray, ids: np.ndarray, k: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ordered by cluster, then by descending similarity, ties by id (so the
    nearest members do not depend on the order rows came in), and where each cluster
    0..k-1 starts and ends in that order."""
    order = np.lexsort((ids, -sim, lab))
    ordered = lab[order]
    clusters = np.arange(k)
    return order, np.searchsorted(ordered, clusters, "left"), np.searchsorted(ordered, clusters, "right")


def _first_of_each(lab: np.ndarray, order: np.ndarray, starts: np.ndarray, top: int) -> np.ndarray:
    """The rows (indexes into lab) ranked < top within their cluster."""
    if not len(order):
        return order
    rank = np.arange(len(order)) - starts[lab[order]]
    return order[rank < top]


def centroid_similarity(X: np.ndarray, labels: np.ndarray, centroids: np.ndarray | Centroids, *,
                        ids: np.ndarray | None = None, top: int = REPRESENTATIVES) -> CentroidSimilarity:
    """Per-cluster cosine similarity of the members to their centroid (mean, minimum)
    and the ``top`` members nearest it, in one chunked pass over ``X``: the
    temporaries are one chunk's, so a million rows add a few MB, not a copy of X.

    ``labels`` as ``run_clustering`` returns them (-1 noise, left out); the rows of
    ``centroids`` are the clusters 0..k-1. ``ids`` name the rows (default: positions).
    """
    vectors = centroids.vectors if isinstance(centroids, Centroids) else np.asarray(centroids, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"centroids must be a (k, d) array (got shape {vectors.shape})")
    X = np.asarray(X, dtype=np.float32)
    labels = _check_labels(X, labels)
    if X.ndim != 2 or (len(X) and X.shape[1] != vectors.shape[1]):
        raise ValueError(f"embeddings have shape {X.shape} but centroids have {vectors.shape[1]} dimensions")
    k = len(vectors)
    if labels.size and labels.max() >= k:
        raise ValueError(f"labels go up to {int(labels.max())} but there are {k} centroids")
    if ids is not None and len(ids) != len(X):
        raise ValueError(f"ids ({len(ids)}) and embeddings ({len(X)}) differ in length")
    unit = _unit_rows(vectors)
    total = CentroidSimilarity.empty(k, top)
    for start in range(0, len(X), _CHUNK_ROWS):
        lab = labels[start:start + _CHUNK_ROWS]
        block = X[start:start + _CHUNK_ROWS]
        rows = np.flatnonzero(lab >= 0)
        if not len(rows):
            continue
        if len(rows) < len(lab):  # noise in the chunk: only members (else no copy)
            block, lab = block[rows], lab[rows]
        # cos = x.c / |x| with c of unit length; a zero row has similarity 0, not NaN
        dots = np.einsum("ij,ij->i", block, unit[lab])
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        sims = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        names = start + rows if ids is None else np.asarray(ids[start:start + _CHUNK_ROWS])[rows]
        total = total + CentroidSimilarity.of(sims, lab, k, ids=names, top=top)
    return total


def assign_to_centroids(
    X: np.ndarray, centroid_vectors: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ``assign`` mode: each point goes to the centroid of highest cosine
    similarity when that similarity is >= ``threshold``, else to noise (-1).

    Returns ``(labels int32, similarity float32)``; labels index the rows of
    ``centroid_vectors``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"assignment_threshold must be between 0 and 1 (got {threshold})")
    labels, best = nearest_centroid(X, centroid_vectors)
    labels[best < threshold] = NOISE
    return labels, best


def nearest_centroid(X: np.ndarray, centroid_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's centroid of highest cosine similarity, whatever the similarity:
    ``(labels int32 indexing the rows of centroid_vectors, similarity float32)``."""
    X = np.asarray(X, dtype=np.float32)
    unit_centroids = _unit_rows(np.asarray(centroid_vectors, dtype=np.float32))
    if unit_centroids.ndim != 2 or len(unit_centroids) == 0:
        raise ValueError("assign needs at least one centroid")
    if X.ndim != 2 or X.shape[1] != unit_centroids.shape[1]:
        raise ValueError(
            f"embeddings have shape {X.shape} but centroids have {unit_centroids.shape[1]} dimensions"
        )
    labels = np.empty(len(X), dtype=np.int32)
    best = np.empty(len(X), dtype=np.float32)
    for start in range(0, len(X), _CHUNK_ROWS):
        sims = _unit_rows(X[start : start + _CHUNK_ROWS]) @ unit_centroids.T
        labels[start : start + _CHUNK_ROWS] = sims.argmax(axis=1)
        best[start : start + _CHUNK_ROWS] = sims.max(axis=1)
    return labels, best


def _unit_rows(M: np.ndarray) -> np.ndarray:
    # A zero vector has no direction; leave it zero so its similarity is 0, not NaN.
    norms = np.linalg.norm(M, axis=-1, keepdims=True)
    return M / np.where(norms == 0, 1, norms)


def _check_labels(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).ravel()
    if len(labels) != len(X):
        raise ValueError(f"labels ({len(labels)}) and embeddings ({len(X)}) differ in length")
    if labels.size and labels.min() < NOISE:
        raise ValueError(f"labels must be >= -1 (got {int(labels.min())})")
    return labels.astype(np.int64, copy=False)
