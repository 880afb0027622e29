import pytest
from pydantic import ValidationError

from contracts.engine_params import (
    MAX_POINTS,
    PARAMS_MODELS,
    SPECTRAL_RBF_MAX_POINTS,
    ClusteringMethod,
    cap_for,
    validate_params,
)

DEFAULTS = {
    "kmeans": dict(n_clusters=8, max_iter=300, n_init=10, tol=1e-4, init="k-means++", random_state=42),
    "dbscan": dict(eps=0.5, min_samples=5, metric="euclidean", noise_policy="keep", max_noise_share=0.1),
    "hdbscan": dict(
        min_cluster_size=5, min_samples=None, cluster_selection_epsilon=0.0, max_cluster_size=None,
        cluster_selection_method="eom", allow_single_cluster=False, noise_policy="keep", max_noise_share=0.1,
    ),
    "agglomerative": dict(n_clusters=2, linkage="ward", distance_threshold=None),
    "spectral": dict(n_clusters=8, affinity="rbf", n_neighbors=10, assign_labels="kmeans", random_state=42),
    "gaussian_mixture": dict(n_components=1, covariance_type="full", random_state=42),
    "mean_shift": dict(bandwidth=None, bin_seeding=False),
    "optics": dict(min_samples=5, max_eps=None, cluster_method="xi", xi=0.05, eps=None, noise_policy="keep",
                   max_noise_share=0.1),
    # The hosted SDK's LeidenParams and EVoCParams, with its defaults.
    "leiden": dict(resolution=1.0, n_neighbors=30, metric="cosine", min_cluster_size=0,
                   objective_function="RBConfiguration", n_iterations=2, random_state=42),
    "evoc": dict(noise_level=0.5, base_min_cluster_size=5, approx_n_clusters=None, n_neighbors=15, min_samples=5,
                 random_state=42),
    "auto": dict(random_state=42, noise_policy="assign", max_noise_share=0.1),
}
REFERENCE_METHODS = {"kmeans", "dbscan", "hdbscan", "agglomerative", "spectral", "gaussian_mixture", "mean_shift",
                     "optics"}


def test_the_reference_methods_and_the_hosted_extras_are_the_enum_and_all_have_models_and_caps():
    names = {m.value for m in ClusteringMethod}
    assert names == set(DEFAULTS) == REFERENCE_METHODS | {"leiden", "evoc", "auto"}
    assert set(PARAMS_MODELS) == set(MAX_POINTS) == set(ClusteringMethod)


@pytest.mark.parametrize("method", sorted(DEFAULTS))
def test_defaults_follow_the_reference(method):
    assert validate_params(method, {}).model_dump() == DEFAULTS[method]
    assert validate_params(ClusteringMethod(method), None).model_dump() == DEFAULTS[method]


REJECTIONS = [
    ("kmeans", {"n_clusters": 1}, 'algorithm_params.n_clusters: must be an integer >= 2 or "auto" (got 1)'),
    ("kmeans", {"n_clusters": "many"}, "algorithm_params.n_clusters: must be an integer >= 2"),
    ("kmeans", {"n_clusters": True}, "algorithm_params.n_clusters: must be an integer >= 2"),
    ("kmeans", {"n_clusters": 4.0}, "algorithm_params.n_clusters: must be an integer >= 2"),
    ("kmeans", {"max_iter": 0}, "algorithm_params.max_iter: must be >= 1 (got 0)"),
    ("kmeans", {"n_init": 0}, "algorithm_params.n_init: must be >= 1 (got 0)"),
    ("kmeans", {"n_init": 101}, "algorithm_params.n_init: must be <= 100 (got 101)"),
    ("kmeans", {"tol": -0.1}, "algorithm_params.tol: must be >= 0"),
    ("kmeans", {"init": "k-means||"}, "algorithm_params.init: must be one of 'k-means++' or 'random'"),
    ("kmeans", {"random_state": -1}, "algorithm_params.random_state: must be >= 0 (got -1)"),
    ("kmeans", {"random_state": None}, "algorithm_params.random_state: must be an integer (got None)"),
    ("kmeans", {"max_iter": "300"}, "algorithm_params.max_iter: must be an integer (got '300')"),
    ("dbscan", {"eps": 0}, "algorithm_params.eps: must be > 0"),
    ("dbscan", {"min_samples": 0}, "algorithm_params.min_samples: must be >= 1 (got 0)"),
    ("dbscan", {"metric": "l3"}, "algorithm_params.metric: must be one of 'euclidean', 'cosine' or 'manhattan'"),
    ("hdbscan", {"min_cluster_size": 1}, "algorithm_params.min_cluster_size: must be >= 2 (got 1)"),
    ("hdbscan", {"min_samples": 0}, "algorithm_params.min_samples: must be >= 1 (got 0)"),
    ("hdbscan", {"cluster_selection_epsilon": -1.0}, "algorithm_params.cluster_selection_epsilon: must be >= 0"),
    ("hdbscan", {"max_cluster_size": 1}, "algorithm_params.max_cluster_size: must be >= 2 (got 1)"),
    ("hdbscan", {"min_cluster_size": 10, "max_cluster_size": 5}, "max_cluster_size (5) must be >= min_cluster_size (10)"),
    ("hdbscan", {"cluster_selection_method": "tree"}, "algorithm_params.cluster_selection_method: must be one of 'eom' or 'leaf'"),
    ("hdbscan", {"allow_single_cluster": "yes"}, "algorithm_params.allow_single_cluster: must be true or false"),
    ("agglomerative", {"n_clusters": 1}, "algorithm_params.n_clusters: must be an integer >= 2 or \"auto\" or null"),
    ("agglomerative", {"linkage": "centroid"}, "algorithm_params.linkage: must be one of 'ward', 'complete', 'average' or 'single'"),
    ("agglomerative", {"n_clusters": None, "distance_threshold": 0}, "algorithm_params.distance_threshold: must be > 0"),
    ("agglomerative", {"n_clusters": 3, "distance_threshold": 1.5}, "give exactly one of n_clusters and distance_threshold"),
    ("agglomerative", {"n_clusters": None}, "give exactly one of n_clusters and distance_threshold"),
    ("spectral", {"n_clusters": 1}, "algorithm_params.n_clusters: must be an integer >= 2"),
    ("spectral", {"affinity": "cosine"}, "algorithm_params.affinity: must be one of 'rbf' or 'nearest_neighbors'"),
    ("spectral", {"n_neighbors": 1}, "algorithm_params.n_neighbors: must be >= 2 (got 1)"),
    ("spectral", {"assign_labels": "cluster_qr"}, "algorithm_params.assign_labels: must be one of 'kmeans' or 'discretize'"),
    ("gaussian_mixture", {"n_components": 0}, 'algorithm_params.n_components: must be an integer >= 1 or "auto" (got 0)'),
    ("gaussian_mixture", {"covariance_type": "banded"}, "algorithm_params.covariance_type: must be one of 'full', 'tied', 'diag' or 'spherical'"),
    ("mean_shift", {"bandwidth": 0}, "algorithm_params.bandwidth: must be > 0"),
    ("mean_shift", {"bin_seeding": 1}, "algorithm_params.bin_seeding: must be true or false (got 1)"),
    ("optics", {"min_samples": 1}, "algorithm_params.min_samples: must be >= 2 (got 1)"),
    ("optics", {"max_eps": 0}, "algorithm_params.max_eps: must be > 0"),
    ("optics", {"cluster_method": "hdbscan"}, "algorithm_params.cluster_method: must be one of 'xi' or 'dbscan'"),
    ("optics", {"xi": 1.5}, "algorithm_params.xi: must be <= 1"),
    ("optics", {"xi": -0.1}, "algorithm_params.xi: must be >= 0"),
    ("optics", {"cluster_method": "dbscan"}, 'cluster_method "dbscan" needs eps (or a finite max_eps)'),
    ("optics", {"cluster_method": "dbscan", "eps": 2.0, "max_eps": 1.0}, "eps (2.0) must be <= max_eps (1.0)"),
    ("leiden", {"resolution": 0}, "algorithm_params.resolution: must be > 0"),
    ("leiden", {"resolution": 101}, "algorithm_params.resolution: must be <= 100"),
    ("leiden", {"n_neighbors": 1}, "algorithm_params.n_neighbors: must be >= 2 (got 1)"),
    ("leiden", {"n_neighbors": 201}, "algorithm_params.n_neighbors: must be <= 200 (got 201)"),
    ("leiden", {"metric": "manhattan"}, "algorithm_params.metric: must be one of 'cosine' or 'euclidean'"),
    ("leiden", {"min_cluster_size": -1}, "algorithm_params.min_cluster_size: must be >= 0 (got -1)"),
    ("leiden", {"objective_function": "surprise"},
     "algorithm_params.objective_function: must be one of 'RBConfiguration', 'modularity' or 'CPM'"),
    ("leiden", {"n_iterations": 0}, "n_iterations must be -1 (until stable) or >= 1 (got 0)"),
    ("leiden", {"n_iterations": -2}, "algorithm_params.n_iterations: must be >= -1 (got -2)"),
    ("evoc", {"noise_level": 1.5}, "algorithm_params.noise_level: must be <= 1"),
    ("evoc", {"noise_level": -0.1}, "algorithm_params.noise_level: must be >= 0"),
    ("evoc", {"base_min_cluster_size": 1}, "algorithm_params.base_min_cluster_size: must be >= 2 (got 1)"),
    ("evoc", {"approx_n_clusters": 1}, "algorithm_params.approx_n_clusters: must be >= 2 (got 1)"),
    ("evoc", {"n_neighbors": 500}, "algorithm_params.n_neighbors: must be <= 200 (got 500)"),
    ("evoc", {"min_samples": 0}, "algorithm_params.min_samples: must be >= 1 (got 0)"),
    ("auto", {"n_clusters": 5},
     "algorithm_params.n_clusters: unknown parameter; AutoParams accepts: random_state, noise_policy"),
    ("hdbscan", {"noise_policy": "drop"}, "algorithm_params.noise_policy: must be one of 'keep', 'assign' or 'cap'"),
    ("dbscan", {"max_noise_share": 1.5}, "algorithm_params.max_noise_share: must be <= 1"),
    ("optics", {"noise_policy": None}, "algorithm_params.noise_policy: must be one of 'keep', 'assign' or 'cap'"),
    ("auto", {"max_noise_share": -0.1}, "algorithm_params.max_noise_share: must be >= 0"),
]


@pytest.mark.parametrize(("method", "params", "message"), REJECTIONS)
def test_out_of_range_values_are_rejected_with_the_parameter_and_its_range(method, params, message):
    with pytest.raises(ValueError) as caught:
        validate_params(method, params)
    assert message in str(caught.value)
    assert not isinstance(caught.value, ValidationError)  # callers see one plain ValueError


def test_every_bad_parameter_is_reported_at_once():
    with pytest.raises(ValueError) as caught:
        validate_params("kmeans", {"n_clusters": 0, "init": "x"})
    assert "algorithm_params.n_clusters" in str(caught.value)
    assert "algorithm_params.init" in str(caught.value)


def test_unknown_parameter_is_rejected_listing_the_accepted_ones():
    with pytest.raises(ValueError, match=r"algorithm_params\.n_cluster: unknown parameter; KMeansParams accepts: n_clusters, max_iter"):
        validate_params("kmeans", {"n_cluster": 3})


def test_unknown_method_is_rejected_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown clustering_method 'birch'; use one of: kmeans, dbscan, hdbscan"):
        validate_params("birch", {})


def test_params_must_be_an_object():
    with pytest.raises(ValueError, match="algorithm_params must be an object"):
        validate_params("kmeans", [1, 2])  # type: ignore[arg-type]


def test_auto_and_explicit_choices_are_accepted():
    assert validate_params("kmeans", {"n_clusters": "auto"}).n_clusters == "auto"
    assert validate_params("spectral", {"n_clusters": "auto", "affinity": "nearest_neighbors"}).n_clusters == "auto"
    assert validate_params("gaussian_mixture", {"n_components": "auto"}).n_components == "auto"
    assert validate_params("agglomerative", {"n_clusters": "auto", "linkage": "average"}).n_clusters == "auto"
    assert validate_params("optics", {"cluster_method": "dbscan", "eps": 0.5}).eps == 0.5
    assert validate_params("dbscan", {"eps": 1}).eps == 1.0  # a JSON integer is a fine number


def test_a_distance_threshold_alone_clears_the_default_n_clusters():
    p = validate_params("agglomerative", {"distance_threshold": 2.5})
    assert (p.n_clusters, p.distance_threshold) == (None, 2.5)


def test_validated_params_are_frozen_and_pass_through():
    p = validate_params("kmeans", {"n_clusters": 3})
    with pytest.raises(ValidationError):
        p.n_clusters = 4
    assert validate_params("kmeans", p) is p


def test_sampling_caps():
    assert cap_for("kmeans") == 1_000_000
    for method in ("hdbscan", "spectral", "agglomerative", "dbscan"):
        assert cap_for(method) == 50_000
    assert cap_for("gaussian_mixture") == 200_000
    assert (cap_for("optics"), cap_for("mean_shift")) == (10_000, 5_000)
    assert cap_for("spectral", {"affinity": "rbf"}) == SPECTRAL_RBF_MAX_POINTS
    assert cap_for("spectral", validate_params("spectral", {})) == SPECTRAL_RBF_MAX_POINTS
    assert cap_for("spectral", {"affinity": "nearest_neighbors"}) == 50_000
    assert (cap_for("leiden"), cap_for("evoc")) == (50_000, 50_000)
    assert cap_for("auto") == 1_000_000  # above 50K it clusters a sample and assigns the rest
    # kmeans block by block on Ray: the measured cap there; the one-task methods keep theirs
    assert cap_for("kmeans", on_ray=True) == 5_000_000
    assert (cap_for("hdbscan", on_ray=True), cap_for("auto", on_ray=True)) == (50_000, 1_000_000)
    with pytest.raises(ValueError, match="unknown clustering_method"):
        cap_for("birch")
