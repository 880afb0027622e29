"""The clusterer's algorithm layer: arrays in, arrays out, no I/O.

    params     validate_params, ClusteringMethod, MAX_POINTS / cap_for
    algorithms run_clustering -> ClusteringOutcome (labels 0..k-1 by size, -1 noise)
    metrics    clustering_metrics -> {silhouette_score, davies_bouldin_index, calinski_harabasz_score}
    results    compute_centroids, distances_to_centroids, assign_to_centroids, group_key,
               centroid_similarity (members' cosine to their centroid, representatives)
    layout     project -> UMAP coordinates (2 or 3 columns)
    hierarchy  build_hierarchy -> topics over the clusters (parents of agglomerated centroids)

A run in ``full`` mode is, in order: sample to ``cap_for(method)`` points,
``run_clustering``, ``clustering_metrics``, ``compute_centroids`` and
``distances_to_centroids``, ``centroid_similarity``, then ``project`` (unless visualization is deferred).
"""

from . import hierarchy
from .algorithms import AutoKSearch, ClusteringOutcome, relabel_by_size, run_clustering
from .layout import project, warm_up
from .metrics import clustering_metrics
from contracts.engine_params import MAX_POINTS, ClusteringMethod, cap_for, parse_method, validate_params
from .results import (
    NOISE,
    REPRESENTATIVES,
    CentroidSimilarity,
    Centroids,
    assign_to_centroids,
    centroid_similarity,
    group_key,
    compute_centroids,
    distances_to_centroids,
    parse_group_key,
)

__all__ = [
    "MAX_POINTS",
    "NOISE",
    "REPRESENTATIVES",
    "AutoKSearch",
    "CentroidSimilarity",
    "Centroids",
    "ClusteringMethod",
    "ClusteringOutcome",
    "assign_to_centroids",
    "cap_for",
    "centroid_similarity",
    "group_key",
    "clustering_metrics",
    "compute_centroids",
    "distances_to_centroids",
    "hierarchy",
    "parse_group_key",
    "parse_method",
    "project",
    "relabel_by_size",
    "run_clustering",
    "validate_params",
    "warm_up",
]
