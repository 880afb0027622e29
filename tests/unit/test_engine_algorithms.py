import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import services.clusterer.engine.algorithms as algorithms
from services.clusterer.engine import relabel_by_size, run_clustering

# Well-separated blobs give spectral clustering a disconnected affinity graph, by design.
pytestmark = pytest.mark.filterwarnings("ignore:Graph is not fully connected")

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny inputs gain nothing from threads, and on a shared box sklearn's OpenMP threads
    # made KMeans ~12x slower than one thread (see algorithms.py).
    with threadpool_limits(1):
        yield


# Five well-separated centres in 4-d: the known k for the "auto" tests.
FIVE_CENTRES = 10.0 * np.vstack([np.eye(4), -np.ones((1, 4))])


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=300, n_features=5, centers=4, cluster_std=0.5, random_state=0)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def five_blobs():
    X, y = make_blobs(n_samples=400, centers=FIVE_CENTRES, cluster_std=1.0, random_state=3)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def blobs_384():
    # Embedding-sized: 2,000 points in 384-d, 6 clusters.
    X, y = make_blobs(n_samples=2_000, n_features=384, centers=6, cluster_std=4.0, center_box=(-3, 3), random_state=0)
    return X.astype(np.float32), y


SEPARABLE = {
    "kmeans": ({"n_clusters": 4}, "KMeans"),
    "dbscan": ({"eps": 1.0}, "DBSCAN"),
    "hdbscan": ({}, "HDBSCAN"),
    "agglomerative": ({"n_clusters": 4}, "AgglomerativeClustering"),
    "spectral": ({"n_clusters": 4}, "SpectralClustering"),
    "gaussian_mixture": ({"n_components": 4}, "GaussianMixture"),
    "mean_shift": ({"bandwidth": 2.0}, "MeanShift"),
    "optics": ({"min_samples": 10}, "OPTICS"),
    "leiden": ({"n_neighbors": 15}, "Leiden"),
    "auto": ({}, "Leiden"),
}


@pytest.mark.parametrize("method", sorted(SEPARABLE))
def test_each_method_recovers_separated_blobs(blobs, method):
    X, y = blobs
    params, estimator = SEPARABLE[method]
    outcome = run_clustering(X, method, params, seed=7)
    assert outcome.estimator == estimator
    assert outcome.n_clusters == 4
    assert adjusted_rand_score(y, outcome.labels) >= 0.9
    assert outcome.labels.dtype == np.int32 and outcome.labels.shape == (len(X),)
    assert outcome.noise_count == int((outcome.labels == -1).sum())
    assert outcome.seconds > 0


@pytest.mark.parametrize("method", sorted(SEPARABLE))
def test_same_input_and_seed_give_the_same_labels(blobs, method):
    X, _ = blobs
    params, _ = SEPARABLE[method]
    first = run_clustering(X, method, params, seed=3).labels
    second = run_clustering(X.copy(), method, params, seed=3).labels
    np.testing.assert_array_equal(first, second)


def test_labels_are_numbered_by_size_with_noise_kept(blobs):
    X, _ = blobs
    labels = run_clustering(X, "dbscan", {"eps": 0.6, "min_samples": 8}).labels
    sizes = np.bincount(labels[labels >= 0])
    assert list(sizes) == sorted(sizes, reverse=True)
    assert (labels >= -1).all()


def test_relabel_by_size_orders_by_size_then_first_appearance():
    raw = np.array([7, 3, 3, -5, 9, 9, 7, -1, 9])
    np.testing.assert_array_equal(relabel_by_size(raw), [1, 2, 2, -1, 0, 0, 1, -1, 0])
    np.testing.assert_array_equal(relabel_by_size(np.array([-1, -1])), [-1, -1])


def test_mean_shift_has_no_noise_and_records_the_estimated_bandwidth(blobs):
    X, _ = blobs
    outcome = run_clustering(X, "mean_shift", {})
    assert outcome.noise_count == 0
    assert outcome.params["bandwidth"] > 0


def test_kmeans_at_384_dims(blobs_384):
    X, y = blobs_384
    outcome = run_clustering(X, "kmeans", {"n_clusters": 6})
    assert outcome.estimator == "KMeans" and outcome.reduction is None
    assert adjusted_rand_score(y, outcome.labels) >= 0.9


def test_large_inputs_switch_to_a_well_seeded_minibatch(blobs_384, monkeypatch):
    X, y = blobs_384
    monkeypatch.setattr(algorithms, "KMEANS_EXACT_MAX_POINTS", 500)
    monkeypatch.setattr(algorithms, "MINIBATCH_SEED_SAMPLE", 400)
    outcome = run_clustering(X, "kmeans", {"n_clusters": 6})
    assert outcome.estimator == "MiniBatchKMeans"
    assert adjusted_rand_score(y, outcome.labels) >= 0.9
    np.testing.assert_array_equal(outcome.labels, run_clustering(X, "kmeans", {"n_clusters": 6}).labels)


def test_hdbscan_at_384_dims_reduces_first(blobs_384):
    X, y = blobs_384
    outcome = run_clustering(X, "hdbscan", {"min_cluster_size": 20}, seed=1)
    assert outcome.reduction == "PCA(384->50)+UMAP(50->10)"
    assert outcome.params["min_samples"] == 20  # None resolves to min_cluster_size
    assert adjusted_rand_score(y, outcome.labels) >= 0.9
    np.testing.assert_array_equal(run_clustering(X, "hdbscan", {"min_cluster_size": 20}, seed=1).labels, outcome.labels)



def test_hdbscan_fast_route_above_its_threshold(blobs_384, monkeypatch):
    # The 50K route (kNN once, UMAP from PCA coordinates, few epochs, 5-d), forced on 2K points.
    monkeypatch.setattr(algorithms, "HDBSCAN_FAST_MIN_POINTS", 1_000)
    X, y = blobs_384
    outcome = run_clustering(X, "hdbscan", {"min_cluster_size": 20}, seed=1)
    assert outcome.reduction == "PCA(384->50)+UMAP(50->5, pca init, 10 epochs)"
    assert adjusted_rand_score(y, outcome.labels) >= 0.9
    np.testing.assert_array_equal(run_clustering(X, "hdbscan", {"min_cluster_size": 20}, seed=1).labels, outcome.labels)

@pytest.mark.parametrize(
    ("method", "key", "criterion"),
    [
        ("kmeans", "n_clusters", algorithms.AGREEMENT),
        ("agglomerative", "n_clusters", algorithms.AGREEMENT),
        ("spectral", "n_clusters", algorithms.AGREEMENT),
        ("gaussian_mixture", "n_components", "bic"),
    ],
)
def test_auto_finds_the_known_number_of_clusters(five_blobs, method, key, criterion):
    X, y = five_blobs
    outcome = run_clustering(X, method, {key: "auto"})
    assert outcome.auto_k is not None and outcome.auto_k.criterion == criterion
    assert outcome.auto_k.chosen == 5 == outcome.n_clusters == outcome.params[key]
    assert min(outcome.auto_k.scores) == (1 if criterion == "bic" else 2)
    assert max(outcome.auto_k.scores) == 20
    assert adjusted_rand_score(y, outcome.labels) >= 0.9


def test_kmeans_auto_starts_from_the_graphs_communities(five_blobs):
    from sklearn.cluster import KMeans

    X, y = five_blobs
    outcome = run_clustering(X, "kmeans", {"n_clusters": "auto"})
    init = outcome.explanation()["init"]
    assert set(init["scores"]) == {"42", "43", "44"}  # one fit per Leiden restart of the search
    assert init["chosen_seed"] == int(min(init["scores"], key=init["scores"].get))
    search = outcome.auto_k
    S = X[search.sample_rows]
    groups = algorithms.communities_to_k(S, search.communities[init["chosen_seed"]], 5, 42)
    starts = np.stack([S[groups == g].mean(axis=0) for g in range(5)])
    expected = KMeans(n_clusters=5, init=starts, n_init=1, random_state=42).fit(X).labels_
    assert adjusted_rand_score(expected, outcome.labels) == 1.0
    assert adjusted_rand_score(y, outcome.labels) >= 0.9

    # A named init is the user's: k-means++ as the reference runs it, no graph start.
    named = run_clustering(X, "kmeans", {"n_clusters": "auto", "init": "k-means++"})
    assert "init" not in named.explanation() and named.n_clusters == 5
    reference = KMeans(n_clusters=5, n_init=10, random_state=42).fit(X).labels_
    assert adjusted_rand_score(reference, named.labels) == 1.0
    # A named k never searches and keeps the reference's k-means++.
    assert run_clustering(X, "kmeans", {"n_clusters": 5}).explanation() is None


def test_communities_to_k_merges_the_smallest_into_its_nearest_and_splits_the_largest():
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0, 0]) + 0.01 * rng.standard_normal((12, 3))
    b = np.array([0, 1.0, 0]) + 0.01 * rng.standard_normal((12, 3))
    c = np.array([0.9, 0.1, 0]) + 0.01 * rng.standard_normal((3, 3))  # small, nearest to a
    S = np.vstack([a, b, c]).astype(np.float32)
    communities = np.repeat([7, 3, 5], [12, 12, 3])  # any ids
    two = algorithms.communities_to_k(S, communities, 2, 42)
    assert sorted(np.bincount(two)) == [12, 15]
    assert len(set(two[:12]) | set(two[24:])) == 1 and two[0] != two[12]
    assert sorted(np.bincount(algorithms.communities_to_k(S, communities, 3, 42))) == [3, 12, 12]

    # One community over two groups, asked for two: the largest is split.
    X, y = make_blobs(n_samples=60, centers=[[0, 0], [10, 10]], cluster_std=0.5, random_state=1)
    split = algorithms.communities_to_k(X.astype(np.float32), np.zeros(60, dtype=int), 2, 42)
    assert adjusted_rand_score(y, split) == 1.0
    with pytest.raises(ValueError, match="between 1 and the number of points"):
        algorithms.communities_to_k(S, communities, 0, 42)


def test_agglomerative_distance_threshold_cuts_the_tree(five_blobs):
    X, _ = five_blobs
    outcome = run_clustering(X, "agglomerative", {"distance_threshold": 50.0})
    assert outcome.n_clusters == 5
    assert outcome.params["n_clusters"] is None


@pytest.mark.parametrize(
    ("X", "method", "params", "message"),
    [
        (np.zeros((1, 3)), "kmeans", {}, "at least 2 points (got 1)"),
        (np.zeros(5), "kmeans", {}, "must be a 2-D array"),
        (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]), "kmeans", {"n_clusters": 2}, "1 embedding(s) contain NaN"),
        (np.eye(5), "kmeans", {"n_clusters": 6}, "algorithm_params.n_clusters (6) exceeds the number of points (5)"),
        (np.eye(5), "gaussian_mixture", {"n_components": 6}, "algorithm_params.n_components (6) exceeds"),
        (np.eye(5), "agglomerative", {"n_clusters": 6}, "algorithm_params.n_clusters (6) exceeds"),
        (np.eye(5), "spectral", {"n_clusters": 5}, "needs more points (5) than algorithm_params.n_clusters (5)"),
        (np.eye(5), "spectral", {"n_clusters": 2, "affinity": "nearest_neighbors"}, "n_neighbors (10) must be below"),
        (np.eye(4), "hdbscan", {"min_cluster_size": 5}, "min_cluster_size (5) exceeds the number of points (4)"),
        (np.eye(4), "optics", {}, "min_samples (5) exceeds the number of points (4)"),
        (np.eye(2), "kmeans", {"n_clusters": "auto"}, '"auto" needs at least 3 points'),
        (np.eye(3), "kmeans", {"n_clusters": 1}, "algorithm_params.n_clusters: must be an integer >= 2"),
        (np.eye(3), "birch", {}, "unknown clustering_method 'birch'"),
        (np.zeros((10_001, 2)), "spectral", {}, "spectral clusters at most 10,000 points per run (got 10,001)"),
    ],
)
def test_impossible_requests_raise_a_clear_value_error(X, method, params, message):
    with pytest.raises(ValueError) as caught:
        run_clustering(X, method, params)
    assert message in str(caught.value)


def test_dbscan_refuses_an_eps_that_would_exhaust_memory(blobs, monkeypatch):
    X, _ = blobs
    monkeypatch.setattr(algorithms, "DBSCAN_MAX_NEIGHBOR_PAIRS", 10_000)
    with pytest.raises(ValueError, match=r"algorithm_params.eps=100.0 is too large .* lower eps"):
        run_clustering(X, "dbscan", {"eps": 100.0})


def test_evoc_finds_the_blobs_when_given_their_approximate_count(blobs):
    X, y = blobs
    outcome = run_clustering(X, "evoc", {"approx_n_clusters": 4}, seed=7)
    assert outcome.estimator == "EVoC"
    assert outcome.n_clusters == 4
    clustered = outcome.labels >= 0
    assert adjusted_rand_score(y[clustered], outcome.labels[clustered]) >= 0.9


def test_leiden_turns_communities_below_min_cluster_size_into_noise():
    # Three blobs of 100 and one of 6 far away: with min_cluster_size 10 the small one is noise.
    X, y = make_blobs(n_samples=[100, 100, 100, 6], n_features=8, cluster_std=0.3,
                      centers=10.0 * np.vstack([np.eye(8)[:3], -np.ones((1, 8))]), random_state=1)
    params = {"n_neighbors": 10, "resolution": 0.2, "metric": "euclidean"}
    kept = run_clustering(X, "leiden", params, seed=1)
    assert kept.noise_count == 0 and kept.n_clusters == 4
    assert adjusted_rand_score(y, kept.labels) == 1.0
    capped = run_clustering(X, "leiden", params | {"min_cluster_size": 10}, seed=1)
    assert capped.n_clusters == 3
    assert set(np.flatnonzero(capped.labels == -1)) == set(np.flatnonzero(y == 3))


def test_leiden_objectives_and_a_neighbour_count_above_n(blobs):
    X, y = blobs
    for objective in ("modularity", "RBConfiguration"):
        outcome = run_clustering(X, "leiden", {"objective_function": objective, "n_neighbors": 15}, seed=7)
        assert adjusted_rand_score(y, outcome.labels) >= 0.9
    small = run_clustering(X[:12], "leiden", {"n_neighbors": 200}, seed=7)
    assert small.params["n_neighbors"] == 11  # clipped to n - 1, and said so


def test_auto_says_what_it_chose_and_why(five_blobs):
    X, y = five_blobs
    outcome = run_clustering(X, "auto", {}, seed=3)
    assert outcome.n_clusters == 5 and outcome.noise_count == 0
    assert adjusted_rand_score(y, outcome.labels) >= 0.95
    choice = outcome.choice
    assert "Leiden" in choice["pipeline"] and "criterion" in choice
    # 4-d points: the plain graph (local scaling starts at AUTO_LOCAL_SCALING_MIN_DIMS)
    assert choice["pipeline"].startswith("kNN(15, cosine, weights 1 - distance)")
    assert len(choice["scores"]) == algorithms.AUTO_RESTARTS
    assert choice["scores"][str(choice["chosen_seed"])] == max(choice["scores"].values())
    assert outcome.assigned.dtype == bool and not outcome.assigned.any()


def test_auto_on_embedding_sized_vectors_uses_the_centred_locally_scaled_graph(blobs_384, monkeypatch):
    X, y = blobs_384
    outcome = run_clustering(X, "auto", {})
    assert outcome.choice["pipeline"].startswith(
        "kNN(20, cosine of the mean-centred vectors, locally scaled weights: each point's scale its distance "
        "to its 7th neighbour)")
    assert outcome.n_clusters == 6 and adjusted_rand_score(y, outcome.labels) == 1.0
    # The graph is what auto_graph builds: a Leiden run on it from auto's chosen seed
    # gives auto's partition.
    idx, weights, _ = algorithms.auto_graph(X, 42)
    again = algorithms.leiden(idx, weights, resolution=1.0, n_iterations=-1, seed=outcome.choice["chosen_seed"])
    assert adjusted_rand_score(again.labels, outcome.labels) == 1.0
    # Below the threshold the plain graph: the same points cut to 7 dimensions.
    low = run_clustering(X[:, :7], "auto", {})
    assert low.choice["pipeline"].startswith("kNN(15, cosine, weights 1 - distance)")


def test_auto_merges_small_communities_into_their_nearest_cluster_and_marks_them():
    X, y = make_blobs(n_samples=[150, 150, 150, 3], n_features=8, cluster_std=0.3,
                      centers=10.0 * np.vstack([np.eye(8)[:3], -np.ones((1, 8))]), random_state=2)
    outcome = run_clustering(X, "auto", {}, seed=2)
    assert outcome.noise_count == 0 and outcome.n_clusters == 3
    # The three points of the tiny community (under auto's 5) are marked and joined one big blob.
    assert outcome.choice["small_communities_merged"] == 1
    assert set(np.flatnonzero(outcome.assigned)) == set(np.flatnonzero(y == 3))
    assert set(outcome.labels[y == 3]) <= set(outcome.labels[y < 3])
    assert adjusted_rand_score(y[y < 3], outcome.labels[y < 3]) == 1.0


def test_auto_keeps_clusters_of_at_least_one_percent_of_the_points():
    assert [algorithms.auto_min_cluster_size(n) for n in (100, 900, 2412, 20_000)] == [5, 9, 24, 200]
    # A tight community of 7 among 907 points (0.8 %: a cluster under the old 0.5 % rule)
    # is merged into its nearest cluster and its members marked.
    X, y = make_blobs(n_samples=[300, 300, 300, 7], n_features=8, cluster_std=0.3,
                      centers=10.0 * np.vstack([np.eye(8)[:3], -np.ones((1, 8))]), random_state=2)
    outcome = run_clustering(X, "auto", {}, seed=2)
    assert outcome.choice["min_cluster_size"] == 9
    assert outcome.noise_count == 0 and outcome.n_clusters == 3
    assert set(np.flatnonzero(outcome.assigned)) == set(np.flatnonzero(y == 3))


def test_auto_above_its_sample_clusters_a_sample_and_assigns_the_rest(five_blobs, monkeypatch):
    X, y = five_blobs
    monkeypatch.setattr(algorithms, "AUTO_CLUSTER_SAMPLE", 150)
    outcome = run_clustering(X, "auto", {}, seed=3)
    assert outcome.choice["clustered_sample"] == 150
    assert outcome.choice["assigned_to_nearest_centroid"] == len(X) - 150
    assert int(outcome.assigned.sum()) >= len(X) - 150
    assert outcome.noise_count == 0
    assert adjusted_rand_score(y, outcome.labels) >= 0.95


def test_an_auto_cluster_count_explains_its_search(five_blobs):
    X, _ = five_blobs
    outcome = run_clustering(X, "kmeans", {"n_clusters": "auto"}, seed=3)
    why = outcome.explanation()
    assert why["chose"] == f"{outcome.n_clusters} clusters"
    assert why["criterion"] == f"{algorithms.AGREEMENT} (higher is better)"
    assert why["scores"][str(outcome.n_clusters)] == max(why["scores"].values())
    assert run_clustering(X, "kmeans", {"n_clusters": 5}, seed=3).explanation() is None


def _noisy_blobs():
    X, y = make_blobs(n_samples=300, n_features=5, centers=4, cluster_std=0.5, random_state=0)
    scatter = np.random.default_rng(1).uniform(-12, 12, size=(60, 5))
    return np.vstack([X, scatter]).astype(np.float32), np.concatenate([y, np.full(60, -1)])


@pytest.mark.parametrize(("method", "params"), [("hdbscan", {"min_cluster_size": 10}),
                                                ("dbscan", {"eps": 1.0}),
                                                ("optics", {"min_samples": 10})])
def test_noise_policies_keep_assign_or_cap_the_noise_and_mark_what_they_placed(method, params):
    X, y = _noisy_blobs()
    kept = run_clustering(X, method, params, seed=7)
    assert kept.noise_count > 0.1 * len(X) and kept.assigned is None  # the reference's behaviour
    everything = run_clustering(X, method, params | {"noise_policy": "assign"}, seed=7)
    assert everything.noise_count == 0 and everything.n_clusters == kept.n_clusters
    assert (everything.assigned == (kept.labels == -1)).all()
    core = kept.labels >= 0
    assert adjusted_rand_score(kept.labels[core], everything.labels[core]) == 1.0  # core members stay put
    capped = run_clustering(X, method, params | {"noise_policy": "cap", "max_noise_share": 0.05}, seed=7)
    assert capped.noise_count == int(0.05 * len(X))
    assert capped.assigned.sum() == kept.noise_count - capped.noise_count
    # The points placed are those nearest a cluster: every remaining noise point is in the scatter.
    assert (y[capped.labels == -1] == -1).mean() >= 0.9


def test_auto_keeps_its_small_communities_as_noise_when_asked():
    X, y = make_blobs(n_samples=[150, 150, 150, 3], n_features=8, cluster_std=0.3,
                      centers=10.0 * np.vstack([np.eye(8)[:3], -np.ones((1, 8))]), random_state=2)
    merged = run_clustering(X, "auto", {}, seed=2)
    kept = run_clustering(X, "auto", {"noise_policy": "keep"}, seed=2)
    small = merged.choice["points_in_small_communities"]
    assert small >= 3  # the tiny blob at least
    assert kept.noise_count == small and merged.noise_count == 0
    assert int(merged.assigned.sum()) == small and not kept.assigned.any()
