"""Benchmark: the engine's hdbscan and auto at the 50K cap, and auto beside kmeans at 1M,
each beside the bare library calls on the same arrays in the same run (issue 14, item 5).

    .venv/bin/python bench/speed.py [--small 50000] [--large 1000000] [--skip-large] [--old-route]

No servers: the engine is called in this process, as the clusterer calls it
(``pipeline.cluster``: one BLAS thread), after ``warm_up`` (numba compiled, as in a
clusterer replica). Data: ``common.make_data`` (unit vectors around 20 random directions,
384-d float32), seed 0.

At the small size (default 50,000, the cap of the quadratic methods):
  hdbscan          the engine, reference defaults (min_cluster_size 5), reduction included
  bare_hdbscan     the libraries as the engine calls them from 10K points: PCA(50),
                   pynndescent's kNN (15, euclidean), umap.UMAP(5, min_dist 0, that kNN,
                   PCA init, 10 epochs), hdbscan.HDBSCAN(min_cluster_size 5)
  bare_old_route   (--old-route) the libraries as the engine called them before issue 14:
                   PCA(50), umap.UMAP(10, n_neighbors 15, min_dist 0, 200 epochs, spectral
                   init), hdbscan.HDBSCAN(min_cluster_size 5); ~1 min on a quiet box
  auto             the engine's default method
  bare_knn_leiden  pynndescent's kNN graph (15, cosine) + one leidenalg run on all points
At the large size (default 1,000,000):
  auto, kmeans (k=20, the engine: MiniBatchKMeans seeded by an exact KMeans on a sample),
  bare_minibatch   sklearn MiniBatchKMeans(k=20, batch 4096, n_init 3) alone
and the ratio auto / kmeans (the target is at most 2). Per entry: seconds, clusters,
noise share, ARI against the 20 generating directions, and cpu_seconds (this process's
CPU time: on a box shared with other work the wall time grows with the load, the CPU
time much less, so the two together say what a quiet box would take). The last line is
one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import K, last_line  # noqa: E402
from services.clusterer import pipeline  # noqa: E402
from services.clusterer.engine import warm_up  # noqa: E402
from services.clusterer.engine.graph import knn, leiden, similarity_weights  # noqa: E402


def make_labelled(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``common.make_data``'s vectors with their generating direction, built in float32
    row blocks so 1M x 384 stays near its 1.5 GB."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, 384)).astype(np.float32)
    y = rng.integers(0, K, size=n)
    X = np.empty((n, 384), dtype=np.float32)
    for start in range(0, n, 100_000):
        rows = slice(start, min(start + 100_000, n))
        block = centers[y[rows]] + rng.normal(scale=0.5, size=(len(y[rows]), 384)).astype(np.float32)
        X[rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return X, y


def measure(y: np.ndarray, fn) -> dict:
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    labels = np.asarray(fn())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "clusters": int(len(set(labels.tolist()) - {-1})),
            "noise": round(float(np.mean(labels < 0)), 4), "ari": round(float(adjusted_rand_score(y, labels)), 4)}


def engine(X: np.ndarray, method: str, params: dict):
    return lambda: pipeline.cluster(X, method, params, 42).labels


def bare_hdbscan(X: np.ndarray):
    def run():
        import hdbscan
        import pynndescent
        import umap
        from sklearn.decomposition import PCA

        Z = PCA(50, random_state=42).fit_transform(X).astype(np.float32)
        idx, dist = pynndescent.NNDescent(Z, n_neighbors=15, random_state=42, n_jobs=1).neighbor_graph
        U = umap.UMAP(n_components=5, n_neighbors=15, min_dist=0.0, n_epochs=10, init="pca", random_state=42,
                      precomputed_knn=(idx, dist, None)).fit_transform(Z)
        return hdbscan.HDBSCAN(min_cluster_size=5, core_dist_n_jobs=1).fit_predict(U)
    return run


def bare_old_route(X: np.ndarray):
    def run():
        import hdbscan
        import umap
        from sklearn.decomposition import PCA

        Z = PCA(50, random_state=42).fit_transform(X).astype(np.float32)
        U = umap.UMAP(n_components=10, n_neighbors=15, min_dist=0.0, n_epochs=200, random_state=42).fit_transform(Z)
        return hdbscan.HDBSCAN(min_cluster_size=5, core_dist_n_jobs=1).fit_predict(U)
    return run


def bare_knn_leiden(X: np.ndarray):
    def run():
        idx, dist = knn(X, 15, "cosine", 42)
        return leiden(idx, similarity_weights(dist, "cosine"), resolution=1.0, n_iterations=-1, seed=42).labels
    return run


def bare_minibatch(X: np.ndarray):
    def run():
        from sklearn.cluster import MiniBatchKMeans

        return MiniBatchKMeans(n_clusters=K, batch_size=4096, n_init=3, random_state=42).fit(X).labels_
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=50_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--old-route", action="store_true", help="also time the pre-issue-14 PCA + UMAP(200) route")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    warm_up()
    figures: dict = {"benchmark": "speed", "warm_up_seconds": round(time.perf_counter() - t0, 1)}
    X, y = make_labelled(args.small)
    small: dict = {}
    with threadpool_limits(1):  # what pipeline.cluster does; the bare calls get the same
        runs = [("hdbscan", engine(X, "hdbscan", {})), ("bare_hdbscan", bare_hdbscan(X)),
                ("auto", engine(X, "auto", {})), ("bare_knn_leiden", bare_knn_leiden(X))]
        if args.old_route:
            runs.append(("bare_old_route", bare_old_route(X)))
        for name, fn in runs:
            small[name] = measure(y, fn)
            print(f"{args.small:>9,} {name:<16} {small[name]}", flush=True)
    figures[str(args.small)] = small
    del X, y
    if not args.skip_large:
        X, y = make_labelled(args.large)
        large: dict = {}
        with threadpool_limits(1):
            for name, fn in [("auto", engine(X, "auto", {})), ("kmeans", engine(X, "kmeans", {"n_clusters": K})),
                             ("bare_minibatch", bare_minibatch(X))]:
                large[name] = measure(y, fn)
                print(f"{args.large:>9,} {name:<16} {large[name]}", flush=True)
        large["auto_over_kmeans"] = round(large["auto"]["seconds"] / large["kmeans"]["seconds"], 2)
        figures[str(args.large)] = large
    last_line(figures)


if __name__ == "__main__":
    main()
