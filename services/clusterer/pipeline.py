"""The clusterer's numeric stages over arrays (no I/O), composed from the engine:
cluster, summarize (metrics, centroids, distances, members' cosine to their centroid),
layout (kept in the previous run's shape: stable_layout).

Each stage runs under `threads` BLAS/OpenMP threads, the caller's to choose: the
clusterer's composition root passes CLUSTERFLOW_CLUSTERER_THREADS down (services/
clusterer/app.py -> Clusterer.threads), a Ray task passes 1. No settings are read here."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
from threadpoolctl import threadpool_limits

from services.clusterer.engine import (
    CentroidSimilarity,
    ClusteringOutcome,
    centroid_similarity,
    clustering_metrics,
    compute_centroids,
    distances_to_centroids,
    project,
    run_clustering,
)
from services.clusterer.engine import group_key as group_key  # re-exported for the handler
from services.clusterer.engine import stability


@dataclass
class Summary:
    group_labels: list[int]
    sizes: list[int]
    centroids: np.ndarray  # (k, d) float32
    distances: np.ndarray  # (n,) float32, NaN for noise
    noise_count: int
    metrics: dict[str, float | None]
    similarity: CentroidSimilarity  # members' cosine to their centroid; top_ids are row positions


# scikit-learn's chunked pairwise work (silhouette, neighbours) defaults to 1 GiB chunks;
# 128 MiB keeps the clusterer's peak near its dataset without a measurable slowdown.
WORKING_MEMORY_MB = 128


# BLAS/OpenMP threads per run unless the caller says otherwise (the default of
# CLUSTERFLOW_CLUSTERER_THREADS): on a shared 2-core box two OpenMP threads made KMeans
# up to 12x slower than one (see engine/algorithms.py); scale out with replicas instead.
DEFAULT_THREADS = 1


@contextmanager
def _numeric_context(threads: int) -> Iterator[None]:
    with threadpool_limits(limits=threads), sklearn.config_context(working_memory=WORKING_MEMORY_MB):
        yield


def cluster(X: np.ndarray, method: str, params: dict[str, Any], seed: int,
            preprocessing: list[dict[str, Any]] | None = None, *, threads: int = DEFAULT_THREADS
            ) -> ClusteringOutcome:
    with _numeric_context(threads):
        return run_clustering(X, method, params, seed, preprocessing=preprocessing)


def summarize(X: np.ndarray, labels: np.ndarray, seed: int, *, threads: int = DEFAULT_THREADS) -> Summary:
    with _numeric_context(threads):
        return _summarize(X, labels, seed)


def _summarize(X: np.ndarray, labels: np.ndarray, seed: int) -> Summary:
    centroids = compute_centroids(X, labels)
    return Summary(
        group_labels=[int(c) for c in centroids.group_labels],
        sizes=[int(n) for n in centroids.num_members],
        centroids=centroids.vectors,
        distances=distances_to_centroids(X, labels, centroids),
        noise_count=centroids.noise_count,
        metrics=clustering_metrics(X, labels, seed),
        similarity=centroid_similarity(X, labels, centroids),
    )


def layout(X: np.ndarray, n_components: int, seed: int,
           on_progress: Callable[[float], None] | None = None, *, threads: int = DEFAULT_THREADS) -> np.ndarray:
    with _numeric_context(threads):
        return project(X, n_components, seed, on_progress=on_progress)


def stable_layout(X: np.ndarray, ids: np.ndarray, setting, previous: stability.PreviousLayout | None, *,
                  n_components: int, seed: int, embedding_name: str, run_id: str,
                  on_progress: Callable[[float], None] | None = None,
                  threads: int = DEFAULT_THREADS) -> stability.Stabilized:
    with _numeric_context(threads):
        return stability.lay_out(X, ids, setting, previous, n_components=n_components, seed=seed,
                                 embedding_name=embedding_name, run_id=run_id, on_progress=on_progress)
