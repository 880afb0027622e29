"""What a labelling means for the stored results: centroids, member distances, ids.

Cluster ids stay ints inside the engine (0..k-1, -1 for noise); ``cluster_key`` (from
contracts/, where the vocabulary lives) makes the API's string form, "cl_-1" for noise,
and ``parse_cluster_key`` inverts it.

All functions are vectorised and chunked so they stay within a few hundred MB for
1,000,000 x 384 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from contracts.api import NOISE_LABEL, cluster_key, parse_cluster_key

__all__ = [
    "NOISE",
    "Centroids",
    "assign_to_centroids",
    "cluster_key",
    "compute_centroids",
    "distances_to_centroids",
    "parse_cluster_key",
]

NOISE = NOISE_LABEL  # the engine's name for it
# 8k x 384 float32 = 12.5 MB per temporary (25 MB in float64): the peak stays near the
# dataset itself even at 1M points, and the loop overhead is still negligible.
_CHUNK_ROWS = 8_192


@dataclass(frozen=True)
class Centroids:
    """Per-cluster summaries, row i describing cluster ``cluster_ids[i]`` (= i)."""

    cluster_ids: np.ndarray  # int32 (k,), 0..k-1
    vectors: np.ndarray  # float32 (k, d): mean of the members
    num_members: np.ndarray  # int64 (k,)
    variance: np.ndarray  # float32 (k,): mean squared euclidean distance to the centroid
    noise_count: int  # points labelled -1; they have no centroid

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_ids)

    def records(self, *, include_vectors: bool = True, include_noise: bool = False) -> list[dict[str, Any]]:
        """JSON-ready rows: ``{"cluster_id": "cl_0", "num_members", "variance",
        "centroid_vector"}``. With ``include_noise`` and any noise, a last row
        ``{"cluster_id": "cl_-1", "num_members": noise_count, "variance": None,
        "centroid_vector": None}`` is appended."""
        rows: list[dict[str, Any]] = []
        for i, cid in enumerate(self.cluster_ids):
            row: dict[str, Any] = {
                "cluster_id": cluster_key(cid),
                "num_members": int(self.num_members[i]),
                "variance": float(self.variance[i]),
            }
            if include_vectors:
                row["centroid_vector"] = self.vectors[i].tolist()
            rows.append(row)
        if include_noise and self.noise_count:
            row = {"cluster_id": cluster_key(NOISE), "num_members": self.noise_count, "variance": None}
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
        cluster_ids=np.arange(k, dtype=np.int32),
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
