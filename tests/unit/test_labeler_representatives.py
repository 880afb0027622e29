"""Representatives: from the members nearest the centroid, half nearest, half spread."""
from __future__ import annotations

import numpy as np
import polars as pl

from services.labeler import representatives as reps


def _members(sizes: dict[str, int], noise: int = 0) -> pl.DataFrame:
    ids, clusters, distances = [], [], []
    rng = np.random.default_rng(0)
    for cid, n in sizes.items():
        d = rng.uniform(0, 10, size=n)
        ids += [f"{cid}-{i}" for i in range(n)]
        clusters += [cid] * n
        distances += d.tolist()
    ids += [f"noise-{i}" for i in range(noise)]
    clusters += ["cl_-1"] * noise
    distances += [float("nan")] * noise
    return pl.DataFrame({"document_id": ids, "cluster_id": clusters, "distance_to_centroid": distances})


def test_pools_keep_the_nearest_members_capped_and_skip_noise():
    members = _members({"cl_0": 500, "cl_1": 30}, noise=50)
    pools = reps.pools(members, per_cluster=200)
    assert [p.group_id for p in pools] == ["cl_0", "cl_1"]  # largest first, noise gone
    big = pools[0]
    assert big.size == 500 and len(big.ids) == 200
    assert np.all(np.diff(big.distances) >= 0)  # nearest first
    cutoff = big.distances[-1]
    farther = members.filter((pl.col("cluster_id") == "cl_0") & (pl.col("distance_to_centroid") > cutoff))
    assert farther.height == 300 and not set(farther["document_id"]) & set(big.ids)
    assert pools[1].size == 30 and len(pools[1].ids) == 30


def test_a_run_total_bounds_the_pool_of_each_cluster():
    members = _members({f"cl_{i}": 300 for i in range(100)})
    pools = reps.pools(members, per_cluster=200, total=5_000)
    assert all(len(p.ids) == 50 for p in pools)  # 5000 / 100 clusters
    tiny_total = reps.pools(members, per_cluster=200, total=100)
    assert all(len(p.ids) == 20 for p in tiny_total)  # never below 20 a cluster


def test_automatic_sample_count_grows_with_size_and_spread_within_3_to_20():
    small = reps.auto_sample_count(5, 1.0, 1.0)
    medium = reps.auto_sample_count(500, 1.0, 1.0)
    large = reps.auto_sample_count(1_000_000, 1.0, 1.0)
    assert 3 <= small < medium < large == 20
    tight = reps.auto_sample_count(500, 0.5, 1.0)
    loose = reps.auto_sample_count(500, 2.0, 1.0)
    assert 3 <= tight < medium < loose <= 20
    assert reps.auto_sample_count(2, 1.0, 1.0) == 2  # never more than the cluster holds
    counts = reps.sample_counts(reps.pools(_members({"cl_0": 50, "cl_1": 8}), 200), fixed=None)
    assert all(3 <= n <= 20 for n in counts.values())
    assert reps.sample_counts(reps.pools(_members({"cl_0": 50, "cl_1": 8}), 200), fixed=12) == {"cl_0": 12, "cl_1": 8}


def test_selection_takes_the_nearest_half_then_spreads_over_the_cluster():
    # Nearest first: ten points around A, then five points around a far B.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 4)) * 0.1
    b = rng.normal(size=(5, 4)) * 0.1 + 5
    ids = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5)]
    chosen = reps.select(ids, np.vstack([a, b]), k=6)
    assert chosen[:3] == ["a0", "a1", "a2"]  # the nearest half, in order
    assert any(c.startswith("b") for c in chosen[3:])  # spread reaches the far group
    assert len(set(chosen)) == 6
    # Without vectors: simply the nearest.
    assert reps.select(ids, None, k=4) == ["a0", "a1", "a2", "a3"]
    assert reps.select(ids[:2], None, k=5) == ["a0", "a1"]
