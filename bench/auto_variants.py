"""Variants of the plain kNN graph (auto's until issue 14 changed it) and Leiden set-up
on bench/quality.py's labelled sets (engine only).

    .venv/bin/python bench/auto_variants.py [--sets wiki7 wiki11 debian digits]

For each variant: a cosine kNN graph, Leiden (RBConfiguration) from seeds 42, 43, 44, the
restart with the highest objective, communities under auto's minimum size merged into
the nearest cluster by centroid cosine (as auto does), and its ARI against the classes;
the ARI of each raw restart is printed beside it, to show how much of a difference is
seed luck. docs/engine-measurements.md keeps the table this printed for issue 14.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import SETS, load_set  # noqa: E402
from services.clusterer.engine.algorithms import apply_noise_policy, auto_min_cluster_size  # noqa: E402
from services.clusterer.engine.graph import knn, similarity_weights  # noqa: E402

# name: (neighbours, resolution, how a pair listed both ways is weighed, centre the vectors first)
VARIANTS = {
    "auto (15, res 1, max)": (15, 1.0, "max", False),
    "10 neighbours": (10, 1.0, "max", False),
    "20 neighbours": (20, 1.0, "max", False),
    "30 neighbours": (30, 1.0, "max", False),
    "resolution 0.85": (15, 0.85, "max", False),
    "resolution 1.2": (15, 1.2, "max", False),
    "mutual pairs weigh double (sum)": (15, 1.0, "sum", False),
    "centred vectors": (15, 1.0, "max", True),
}


def communities(idx: np.ndarray, weights: np.ndarray, resolution: float, combine: str, seed: int):
    import igraph as ig
    import leidenalg

    n, k = idx.shape
    graph = ig.Graph(n=n, edges=np.column_stack([np.repeat(np.arange(n), k), idx.ravel()]), directed=False)
    graph.es["weight"] = weights.ravel().astype(float).tolist()
    graph = graph.simplify(combine_edges=combine)
    found = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                     n_iterations=-1, seed=seed, resolution_parameter=resolution)
    return np.asarray(found.membership), found.quality()


def merged(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    sizes = np.bincount(labels)
    small = sizes[labels] < auto_min_cluster_size(len(X))
    return apply_noise_policy(X, np.where(small, -1, labels), "assign")[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in args.sets:
        X, y, _ = load_set(name)
        for variant, (k, resolution, combine, centre) in VARIANTS.items():
            idx, dist = knn(X - X.mean(axis=0) if centre else X, k, "cosine")
            weights = similarity_weights(dist, "cosine")
            restarts = [communities(idx, weights, resolution, combine, seed) for seed in (42, 43, 44)]
            best = max(restarts, key=lambda r: r[1])[0]
            labels = merged(X, best)
            raw = [round(adjusted_rand_score(y, r[0]), 3) for r in restarts]
            print(f"{name:<7} {variant:<32} ARI {adjusted_rand_score(y, labels):.3f} "
                  f"k {labels.max() + 1:>2}  restarts {raw}", flush=True)


if __name__ == "__main__":
    main()
