"""Composite runs: the centroids of several completed runs clustered into cross-run
groups. Arrays in, arrays out; no I/O.

**Criterion.** Agglomerative clustering of the source centroids on cosine distance with
average linkage, cut at ``1 - COMPOSITE_MIN_SIMILARITY``: two groups are joined while
the mean cosine similarity between their centroids (every pair, one from each) is at
least 0.8. No number of groups is chosen in advance; a source cluster unlike every
other stays a group of its own. Centroids of one run may share a group (when that run
split a topic the others keep whole).

A group's centroid is the member-weighted mean of its source centroids; groups are
numbered by their total members, largest first (ties: first source cluster first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering

COMPOSITE_MIN_SIMILARITY = 0.8


@dataclass
class Grouping:
    labels: np.ndarray  # (n,) int: the group of each source centroid, 0..g-1
    centroids: np.ndarray  # (g, d) float32: member-weighted mean of each group's sources
    sizes: np.ndarray  # (g,) int64: members over each group's sources
    similarity: np.ndarray  # (n,) float32: cosine of each source centroid to its group's

    @property
    def n_groups(self) -> int:
        return len(self.centroids)


def group_centroids(vectors: np.ndarray, num_members: np.ndarray,
                    min_similarity: float = COMPOSITE_MIN_SIMILARITY) -> Grouping:
    vectors = np.asarray(vectors, dtype=np.float64)
    weights = np.asarray(num_members, dtype=np.float64)
    n = len(vectors)
    if vectors.ndim != 2 or n == 0:
        raise ValueError("a composite run needs at least one source centroid")
    if n == 1:
        raw = np.zeros(1, dtype=np.int64)
    else:
        raw = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                      distance_threshold=1.0 - min_similarity).fit_predict(_unit(vectors))
    # Renumber: largest group (by members) first, ties by first appearance.
    groups = np.unique(raw)
    totals = np.array([weights[raw == g].sum() for g in groups])
    first = np.array([np.flatnonzero(raw == g)[0] for g in groups])
    order = np.lexsort((first, -totals))
    renumber = np.empty(len(groups), dtype=np.int64)
    renumber[order] = np.arange(len(groups))
    labels = renumber[np.searchsorted(groups, raw)]

    g = len(groups)
    centroids = np.zeros((g, vectors.shape[1]))
    sizes = np.zeros(g, dtype=np.int64)
    for k in range(g):
        rows = labels == k
        w = weights[rows]
        centroids[k] = (vectors[rows] * w[:, None]).sum(axis=0) / w.sum() if w.sum() > 0 else vectors[rows].mean(axis=0)
        sizes[k] = int(w.sum())
    similarity = np.einsum("ij,ij->i", _unit(vectors), _unit(centroids)[labels])
    return Grouping(labels=labels, centroids=centroids.astype(np.float32), sizes=sizes,
                    similarity=similarity.astype(np.float32))


def _unit(M: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(norms == 0, 1, norms)
