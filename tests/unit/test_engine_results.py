import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import davies_bouldin_score, silhouette_score

from services.clusterer.engine import (
    assign_to_centroids,
    group_key,
    clustering_metrics,
    compute_centroids,
    distances_to_centroids,
    parse_group_key,
)

NONE_METRICS = {"silhouette_score": None, "davies_bouldin_index": None, "calinski_harabasz_score": None}


@pytest.fixture(scope="module")
def labelled():
    X, y = make_blobs(n_samples=240, n_features=6, centers=3, cluster_std=0.4, random_state=2)
    labels = y.astype(np.int32)
    labels[::10] = -1  # some noise
    return X.astype(np.float32), labels


def test_metrics_on_clustered_points_only(labelled):
    X, labels = labelled
    metrics = clustering_metrics(X, labels)
    keep = labels >= 0
    assert metrics["silhouette_score"] == pytest.approx(silhouette_score(X[keep], labels[keep]), rel=1e-5)
    assert metrics["davies_bouldin_index"] == pytest.approx(davies_bouldin_score(X[keep], labels[keep]), rel=1e-5)
    assert metrics["calinski_harabasz_score"] > 0
    assert all(isinstance(v, float) for v in metrics.values())


def test_silhouette_is_estimated_on_a_seeded_sample(labelled):
    X, labels = labelled
    first = clustering_metrics(X, labels, seed=5, silhouette_sample=50)["silhouette_score"]
    assert first == clustering_metrics(X, labels, seed=5, silhouette_sample=50)["silhouette_score"]
    assert first == pytest.approx(clustering_metrics(X, labels)["silhouette_score"], abs=0.1)


@pytest.mark.parametrize(
    "labels",
    [np.zeros(20, int), np.full(20, -1), np.r_[np.zeros(19, int), -1], np.arange(20)],
    ids=["one-cluster", "all-noise", "one-cluster-and-noise", "every-point-alone"],
)
def test_metrics_are_none_when_undefined(labels):
    X = np.random.default_rng(0).normal(size=(20, 3))
    assert clustering_metrics(X, labels) == NONE_METRICS


def test_a_sample_that_sees_one_cluster_gives_no_silhouette():
    X = np.random.default_rng(0).normal(size=(1_000, 2))
    labels = np.zeros(1_000, int)
    labels[0] = 1  # one tiny cluster the 10-point sample will miss
    metrics = clustering_metrics(X, labels, silhouette_sample=10, seed=1)
    assert metrics["silhouette_score"] is None
    assert metrics["davies_bouldin_index"] is not None


def test_centroids_are_member_means_and_counts_add_up(labelled):
    X, labels = labelled
    centroids = compute_centroids(X, labels)
    assert centroids.n_clusters == 3
    assert int(centroids.num_members.sum()) + centroids.noise_count == len(X)
    assert centroids.noise_count == int((labels == -1).sum())
    assert centroids.vectors.dtype == np.float32 and centroids.vectors.shape == (3, X.shape[1])
    for c in range(3):
        members = X[labels == c]
        np.testing.assert_allclose(centroids.vectors[c], members.mean(axis=0), rtol=1e-5, atol=1e-5)
        expected_variance = ((members - members.mean(axis=0)) ** 2).sum(axis=1).mean()
        assert centroids.variance[c] == pytest.approx(expected_variance, rel=1e-4)


def test_centroid_records_for_the_api(labelled):
    X, labels = labelled
    records = compute_centroids(X, labels).records(include_noise=True)
    assert [r["cluster_id"] for r in records] == ["cl_0", "cl_1", "cl_2", "cl_-1"]
    assert records[-1] == {"cluster_id": "cl_-1", "num_members": 24, "variance": None, "centroid_vector": None}
    assert len(records[0]["centroid_vector"]) == X.shape[1]
    assert "centroid_vector" not in compute_centroids(X, labels).records(include_vectors=False)[0]


def test_all_noise_has_no_centroids():
    centroids = compute_centroids(np.ones((4, 2)), np.full(4, -1))
    assert centroids.n_clusters == 0 and centroids.noise_count == 4
    assert centroids.vectors.shape == (0, 2)


def test_labels_must_be_contiguous():
    with pytest.raises(ValueError, match="contiguous"):
        compute_centroids(np.ones((3, 2)), np.array([0, 2, 2]))


def test_member_distances_to_their_own_centroid(labelled):
    X, labels = labelled
    centroids = compute_centroids(X, labels)
    distance = distances_to_centroids(X, labels, centroids)
    assert distance.dtype == np.float32
    assert np.isnan(distance[labels == -1]).all()
    i = int(np.flatnonzero(labels == 1)[0])
    assert distance[i] == pytest.approx(np.linalg.norm(X[i] - centroids.vectors[1]), rel=1e-5)
    similarity = distances_to_centroids(X, labels, centroids.vectors, metric="cosine")
    c = centroids.vectors[1]
    assert similarity[i] == pytest.approx(X[i] @ c / np.linalg.norm(X[i]) / np.linalg.norm(c), rel=1e-5)


def test_cluster_keys_round_trip():
    assert group_key(0) == "cl_0" and group_key(np.int32(12)) == "cl_12" and group_key(-1) == "cl_-1"
    assert parse_group_key("cl_7") == 7 and parse_group_key("cl_-1") == -1
    with pytest.raises(ValueError, match='must look like "cl_<n>"'):
        parse_group_key("cluster_7")


def test_assign_mode_uses_cosine_similarity_and_a_threshold():
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    X = np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    labels, similarity = assign_to_centroids(X, centroids, threshold=0.8)
    np.testing.assert_array_equal(labels, [0, 1, -1, -1])  # the diagonal point is at 0.707
    assert similarity[2] == pytest.approx(np.sqrt(0.5), rel=1e-5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        assign_to_centroids(X, centroids, threshold=1.5)
    with pytest.raises(ValueError, match="dimensions"):
        assign_to_centroids(np.ones((2, 3)), centroids, threshold=0.5)


# ------------------------------------------------- members' cosine to their centroid

# Two clusters and a noise point, small enough to check by hand: cluster 0's centroid
# is (1, 1)/sqrt(2), so (1, 0) and (0, 1) are at cos 1/sqrt(2) and (2, 2) at 1;
# cluster 1's centroid (-1, -0.5) has cos 1/sqrt(1.25) with (-1, 0) and 1.5/sqrt(2.5)
# with (-1, -1).
_X = np.array([[1, 0], [2, 2], [0, 1], [-1, 0], [-1, -1], [5, 5]], dtype=np.float32)
_LABELS = np.array([0, 0, 0, 1, 1, -1])
_C = np.array([[1, 1], [-1, -0.5]], dtype=np.float32)


def test_centroid_similarity_exact_values_on_a_hand_made_set():
    from services.clusterer.engine import centroid_similarity

    r = 1 / np.sqrt(2)
    rows = centroid_similarity(_X, _LABELS, _C, top=2).records()
    assert len(rows) == 2
    assert rows[0]["mean_cosine_similarity"] == pytest.approx((1 + 2 * r) / 3, abs=1e-6)
    assert rows[0]["min_cosine_similarity"] == pytest.approx(r, abs=1e-6)
    # nearest first; of the two tied at 1/sqrt(2) the lower id wins
    assert rows[0]["representative_ids"] == [{"document_id": "1", "similarity": 1.0},
                                             {"document_id": "0", "similarity": pytest.approx(r, abs=1e-6)}]
    a, b = 1 / np.sqrt(1.25), 1.5 / np.sqrt(2.5)
    assert rows[1]["mean_cosine_similarity"] == pytest.approx((a + b) / 2, abs=1e-6)
    assert rows[1]["min_cosine_similarity"] == pytest.approx(a, abs=1e-6)
    assert [d["document_id"] for d in rows[1]["representative_ids"]] == ["4", "3"]  # the noise row 5 never


def test_centroid_similarity_with_ids_and_default_top():
    from services.clusterer.engine import REPRESENTATIVES, centroid_similarity

    ids = np.array([f"doc{i}" for i in range(len(_X))], dtype=object)
    rows = centroid_similarity(_X, _LABELS, _C, ids=ids).records()
    assert REPRESENTATIVES == 5
    assert [d["document_id"] for d in rows[0]["representative_ids"]] == ["doc1", "doc0", "doc2"]
    renamed = centroid_similarity(_X, _LABELS, _C).with_ids(lambda p: [f"doc{i}" for i in p]).records()
    assert renamed == rows


def test_centroid_similarity_partials_add_up_whatever_the_cut_and_order(labelled):
    """What the Ray job does with its blocks equals the one-process pass (chunked too)."""
    from services.clusterer.engine import centroid_similarity, compute_centroids

    X, labels = labelled
    X = np.tile(X, (40, 1))  # > one internal chunk of rows
    labels = np.tile(labels, 40)
    ids = np.arange(len(X))
    vectors = compute_centroids(X, labels).vectors
    whole = centroid_similarity(X, labels, vectors, top=3)
    cuts = [0, 7, 5000, 9000, len(X)]
    parts = [centroid_similarity(X[a:b], labels[a:b], vectors, ids=ids[a:b], top=3) for a, b in zip(cuts, cuts[1:])]
    merged = parts[2] + parts[0] + parts[3] + parts[1]
    assert merged.records() == whole.records()
    # against a direct computation
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    cu = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for c, row in enumerate(whole.records()):
        sims = unit[labels == c] @ cu[c]
        assert row["mean_cosine_similarity"] == pytest.approx(float(sims.mean()), abs=1e-5)
        assert row["min_cosine_similarity"] == pytest.approx(float(sims.min()), abs=1e-5)
        assert row["min_cosine_similarity"] <= row["mean_cosine_similarity"]
        best = [d["similarity"] for d in row["representative_ids"]]
        assert best == sorted(best, reverse=True) and best[0] == pytest.approx(float(sims.max()), abs=1e-5)
        assert all(labels[int(d["document_id"])] == c for d in row["representative_ids"])


def test_centroid_similarity_of_a_cluster_without_members_and_all_noise():
    from services.clusterer.engine import CentroidSimilarity, centroid_similarity

    assert CentroidSimilarity.empty(2).records() == [
        {"mean_cosine_similarity": None, "min_cosine_similarity": None, "representative_ids": []}] * 2
    rows = centroid_similarity(_X, np.full(len(_X), -1), _C).records()
    assert [r["mean_cosine_similarity"] for r in rows] == [None, None]


def test_centroid_similarity_rejects_bad_input():
    from services.clusterer.engine import CentroidSimilarity, centroid_similarity

    with pytest.raises(ValueError, match="differ in length"):
        centroid_similarity(_X, _LABELS[:3], _C)
    with pytest.raises(ValueError, match="2 centroids"):
        centroid_similarity(_X, np.array([0, 0, 2, 1, 1, -1]), _C)
    with pytest.raises(ValueError, match="dimensions"):
        centroid_similarity(_X, _LABELS, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="cannot add"):
        CentroidSimilarity.empty(2) + CentroidSimilarity.empty(3)


def test_centroid_similarity_of_a_zero_vector_is_zero_not_nan():
    from services.clusterer.engine import centroid_similarity

    X = np.array([[0, 0], [1, 1]], dtype=np.float32)
    rows = centroid_similarity(X, np.array([0, 0]), np.array([[1, 1]], dtype=np.float32)).records()
    assert rows[0]["min_cosine_similarity"] == 0.0 and rows[0]["mean_cosine_similarity"] == pytest.approx(0.5)
    assert [d["document_id"] for d in rows[0]["representative_ids"]] == ["1", "0"]
