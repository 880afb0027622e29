"""Benchmark: what the per-centroid statistics (members' mean and minimum cosine to
their centroid, the 5 members nearest it: ``engine.centroid_similarity``) cost beside
the clustering they summarise.

    .venv/bin/python bench/centroid_stats.py [--sizes 100000 1000000] [--method kmeans]

No servers: the engine is called in this process as the clusterer calls it
(``pipeline.cluster``, one BLAS thread; kmeans k=20). Data: ``common.make_data`` (unit
vectors around 20 random directions, 384-d float32), seed 0. Per size: the clustering's
seconds, ``pipeline.summarize``'s (metrics, centroids, distances, the statistics), the
statistics' own seconds (best of 3), their ratio to the clustering, and the statistics'
peak extra memory (tracemalloc, numpy's allocations included) beside the data's size.
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import K, last_line, make_data  # noqa: E402

from services.clusterer import pipeline  # noqa: E402
from services.clusterer.engine import centroid_similarity, compute_centroids  # noqa: E402


def measure(n: int, method: str) -> dict:
    X = make_data(n)
    params = {"n_clusters": K} if method == "kmeans" else {}
    t0 = time.perf_counter()
    outcome = pipeline.cluster(X, method, params, 42)
    clustering_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipeline.summarize(X, outcome.labels, 42)
    summarize_s = time.perf_counter() - t0
    vectors = compute_centroids(X, outcome.labels).vectors
    with pipeline._numeric_context():
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            stats = centroid_similarity(X, outcome.labels, vectors)
            runs.append(time.perf_counter() - t0)
        gc.collect()
        tracemalloc.start()
        centroid_similarity(X, outcome.labels, vectors)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    records = stats.records()
    figures = {
        "n": n, "method": method, "clusters": outcome.n_clusters,
        "clustering_s": round(clustering_s, 3), "summarize_s": round(summarize_s, 3),
        "stats_s": round(min(runs), 3), "stats_over_clustering": round(min(runs) / clustering_s, 4),
        "stats_peak_mb": round(peak / 2**20, 1), "data_mb": round(X.nbytes / 2**20, 1),
        "mean_cosine_min_over_clusters": min(r["mean_cosine_similarity"] for r in records),
    }
    print(f"n={n:>9,}  {method}: clustering {clustering_s:8.2f} s  summarize {summarize_s:7.2f} s  "
          f"statistics {min(runs):6.3f} s ({figures['stats_over_clustering']:.1%} of clustering)  "
          f"peak +{figures['stats_peak_mb']} MB over {figures['data_mb']} MB of data", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--method", default="kmeans")
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        results.append(measure(n, args.method))
        gc.collect()
    last_line({"bench": "centroid_stats", "results": results})


if __name__ == "__main__":
    main()
