"""The block-wise k-means and metrics (what Ray tasks compute) against scikit-learn and
the in-process engine, with the rows cut into blocks and the blocks reduced in a
shuffled order (Ray returns them in any order)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score

from services.clusterer.engine import compute_centroids, relabel_by_size
from services.clusterer.engine.blockwise import (
    calinski_harabasz,
    davies_bouldin,
    distance_partial,
    label_partial,
    lloyd_partial,
    lloyd_update,
    nearest,
    size_order,
)


@pytest.fixture(scope="module")
def blobs():
    X, _ = make_blobs(n_samples=6_000, n_features=16, centers=6, cluster_std=1.5, random_state=3)
    return X.astype(np.float32)


def _blocks(n: int, size: int, seed: int) -> list[np.ndarray]:
    cuts = [np.arange(s, min(s + size, n)) for s in range(0, n, size)]
    order = np.random.default_rng(seed).permutation(len(cuts))
    return [cuts[i] for i in order]


def test_lloyd_over_shuffled_blocks_reaches_sklearns_fixed_point(blobs) -> None:
    init = blobs[np.random.default_rng(0).choice(len(blobs), 6, replace=False)]
    centres = init.copy()
    for _ in range(100):
        parts = [lloyd_partial(blobs[rows], centres) for rows in _blocks(len(blobs), 700, 1)]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        centres, shift = lloyd_update(centres, total)
        if shift < 1e-10:
            break
    reference = KMeans(n_clusters=6, init=init, n_init=1, max_iter=100, tol=0, algorithm="lloyd").fit(blobs)
    labels, _ = nearest(blobs, centres)
    assert adjusted_rand_score(reference.labels_, labels) == pytest.approx(1.0)
    assert np.allclose(np.sort(centres, axis=0), np.sort(reference.cluster_centers_, axis=0), atol=1e-3)
    assert total.inertia == pytest.approx(reference.inertia_, rel=1e-3)


def test_a_centre_nobody_chooses_stays_put() -> None:
    X = np.zeros((4, 2), np.float32)
    centres = np.array([[0, 0], [100, 100]], np.float32)
    new, _ = lloyd_update(centres, lloyd_partial(X, centres))
    assert np.array_equal(new[1], centres[1]) and np.isfinite(new).all()


def test_member_means_sizes_and_metrics_match_the_in_process_ones(blobs) -> None:
    centres = KMeans(n_clusters=6, n_init=3, random_state=0).fit(blobs).cluster_centers_.astype(np.float32)
    blocks = _blocks(len(blobs), 1000, 2)
    parts = [label_partial(blobs[rows], centres) for rows in blocks]
    sums, counts = sum(p.sums for p in parts), sum(p.counts for p in parts)
    new_id = size_order(counts)
    order = np.argsort(new_id)
    centroids = (sums[order] / counts[order, None]).astype(np.float32)

    labels = np.empty(len(blobs), np.int32)  # joined back by row identity, not block order
    for rows, p in zip(blocks, parts):
        labels[rows] = new_id[p.labels]
    expected_labels = relabel_by_size(nearest(blobs, centres)[0])
    assert adjusted_rand_score(expected_labels, labels) == pytest.approx(1.0)
    expected = compute_centroids(blobs, labels)
    assert np.allclose(expected.vectors, centroids, atol=1e-4)
    assert np.array_equal(expected.num_members, counts[order])

    dists = [distance_partial(blobs[rows], labels[rows], centroids) for rows in blocks]
    dist_sums, sq_sums = sum(d.dist_sums for d in dists), sum(d.sq_sums for d in dists)
    assert davies_bouldin(centroids, counts[order], dist_sums) == pytest.approx(
        davies_bouldin_score(blobs, labels), rel=1e-4)
    assert calinski_harabasz(centroids, counts[order], sq_sums) == pytest.approx(
        calinski_harabasz_score(blobs, labels), rel=1e-4)


def test_size_order_numbers_largest_first_and_drops_empty_clusters() -> None:
    assert size_order(np.array([5, 0, 9, 5])).tolist() == [1, -1, 0, 2]
    assert davies_bouldin(np.zeros((1, 3)), np.array([4]), np.array([1.0])) is None
    assert calinski_harabasz(np.zeros((1, 3)), np.array([4]), np.array([1.0])) is None
