"""Assign mode over a stream of batches: each document goes to the nearest centroid of
the source run by cosine similarity, or to noise below the threshold. No I/O: the
handler feeds Arrow batches read from the dataset parquet (row group by row group) and
writes the member tables this returns, so memory holds one batch, never the run.

Members of an assign run carry, besides the columns of every run (`document_id`,
`cluster_id`, `distance_to_centroid`, the euclidean distance to the centroid as in full
runs), the cosine `similarity` that decided the assignment. The assigned members' similarity to
their centroid is also tallied per group (mean, minimum, the members nearest it:
`engine.CentroidSimilarity`), as a full run's are to its own centroids.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.clusterer.engine import NOISE, CentroidSimilarity, group_key

MEMBERS_SCHEMA = pa.schema([
    ("document_id", pa.string()),
    ("cluster_id", pa.string()),
    ("distance_to_centroid", pa.float32()),
    ("similarity", pa.float32()),
])


@dataclass
class Assigner:
    """Assigns batches to fixed centroids and tallies what it assigned."""

    keys: list[str]  # the source run's group ids, row-aligned with `vectors`
    vectors: np.ndarray  # (k, d) float32
    threshold: float
    counts: np.ndarray = field(init=False)
    noise: int = 0
    points: int = 0
    similarity_sum: float = 0.0
    similarity: CentroidSimilarity = field(init=False)  # per group; top_ids are document ids
    absorbed_stats: list[dict] | None = None  # centroid_stats() computed elsewhere (a Ray job)

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) == 0:
            raise ValueError("the source run has no centroids to assign to")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"assignment_threshold must be between 0 and 1 (got {self.threshold})")
        self.counts = np.zeros(len(self.keys), dtype=np.int64)
        self.similarity = CentroidSimilarity.empty(len(self.keys))
        self._norms = np.linalg.norm(self.vectors, axis=1).astype(np.float32)
        self._keys = pa.array([*self.keys, group_key(NOISE)], type=pa.string())

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def assign(self, document_ids: pa.Array | pa.ChunkedArray, X: np.ndarray) -> pa.Table:
        """One batch: its members table (MEMBERS_SCHEMA).

        The rule of `engine.assign_to_centroids` (highest cosine similarity, noise below
        the threshold, a zero vector has similarity 0), computed from one product
        ``X @ centroids.T`` and the row norms, which also give the euclidean distance
        (``|x|^2 + |c|^2 - 2 x.c``) without another pass over the batch.
        """
        if X.ndim != 2 or X.shape[1] != self.dimension:
            raise ValueError(f"documents have {X.shape[1] if X.ndim == 2 else '?'} dimensions but the "
                             f"source run's centroids have {self.dimension}")
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        dots = X @ self.vectors.T  # (n, k)
        norms = np.sqrt(np.einsum("ij,ij->i", X, X))
        scale = norms[:, None] * self._norms[None, :]
        sims = np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)
        labels = sims.argmax(axis=1)
        rows = np.arange(n)
        similarity = sims[rows, labels].astype(np.float32)
        noise = similarity < self.threshold
        squared = (norms.astype(np.float64) ** 2 + self._norms[labels].astype(np.float64) ** 2
                   - 2.0 * dots[rows, labels])
        distance = np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)
        index = np.where(noise, len(self.keys), labels)
        self.counts += np.bincount(labels[~noise], minlength=len(self.keys))
        self.noise += int(noise.sum())
        self.points += n
        self.similarity_sum += float(similarity.sum(dtype=np.float64))
        assigned = np.flatnonzero(~noise)
        ids = pa.array(document_ids) if isinstance(document_ids, pa.Array) else document_ids.combine_chunks()
        self.similarity = self.similarity + CentroidSimilarity.of(
            similarity[assigned], labels[assigned], len(self.keys)).with_ids(
            lambda rows: pc.cast(ids.take(pa.array(assigned[rows])), pa.string()).to_pylist())
        return pa.table({
            "document_id": pc.cast(document_ids, pa.string()),
            "cluster_id": self._keys.take(pa.array(index)),
            "distance_to_centroid": pa.array(distance, mask=noise),
            "similarity": pa.array(similarity),
        }, schema=MEMBERS_SCHEMA)

    def absorb(self, counts, noise: int, points: int, similarity_sum: float,
               centroid_stats: list[dict] | None = None) -> None:
        """Add what was assigned elsewhere (the Ray job's blocks, each its own Assigner);
        `centroid_stats`: the job's reduced per-group statistics (what centroid_stats
        then answers)."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != self.counts.shape:
            raise ValueError(f"{len(counts)} counts for {len(self.counts)} centroids")
        self.counts += counts
        self.noise += int(noise)
        self.points += int(points)
        self.similarity_sum += float(similarity_sum)
        if centroid_stats is not None:
            self.absorbed_stats = centroid_stats

    def centroid_stats(self) -> list[dict]:
        """Per group (row-aligned with `keys`): mean/min cosine similarity of its
        assigned members to its centroid and its representatives (CentroidSimilarity.
        records); a Ray job's when absorbed, else this assigner's own."""
        return self.absorbed_stats if self.absorbed_stats is not None else self.similarity.records()

    @property
    def mean_similarity(self) -> float | None:
        return self.similarity_sum / self.points if self.points else None
