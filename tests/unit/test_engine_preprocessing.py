"""preprocessing_steps: validation (contracts) and the transforms (engine), no I/O."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from contracts.engine_params import UMAPStep, WhiteningStep, validate_preprocessing
from services.clusterer.engine import run_clustering
from services.clusterer.engine.preprocessing import preprocess, whiten


def blobs(n_per=80, k=3, d=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def test_steps_validate_in_order_with_the_sdk_defaults():
    steps = validate_preprocessing([{"method": "whitening"}, {"method": "umap", "n_components": 10}, {"method": "none"}])
    assert [s.method for s in steps] == ["whitening", "umap", "none"]
    assert steps[0] == WhiteningStep(regularization=1e-5)
    assert steps[1] == UMAPStep(n_components=10, n_neighbors=30, min_dist=0.0, metric="cosine", random_state=42)
    assert validate_preprocessing(None) == []


@pytest.mark.parametrize("steps,message", [
    ([{"method": "tsne"}], "preprocessing_steps[0].method: must be one of 'whitening', 'umap', 'none' (got 'tsne')"),
    ([{"method": "none"}, {}], "preprocessing_steps[1].method: must be one of 'whitening', 'umap', 'none' (got None)"),
    ([{"method": "umap", "n_components": 1}], "preprocessing_steps[0].n_components: must be >= 2 (got 1)"),
    ([{"method": "umap", "metric": "l1"}], "preprocessing_steps[0].metric: must be one of 'cosine' or 'euclidean'"),
    ([{"method": "whitening", "regularization": -1.0}], "preprocessing_steps[0].regularization: must be >= 0"),
    ([{"method": "whitening", "eps": 1.0}], "preprocessing_steps[0].eps: unknown parameter"),
    ("whitening", "preprocessing_steps must be a list"),
])
def test_bad_steps_name_the_step_the_field_and_the_allowed_values(steps, message):
    with pytest.raises(ValueError) as err:
        validate_preprocessing(steps)
    assert message in str(err.value)


def test_whitening_gives_unit_covariance_and_floors_small_eigenvalues():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    Z = whiten(X)
    assert Z.shape == X.shape and Z.dtype == np.float32
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(6), atol=1e-3)
    flat = np.column_stack([X, np.zeros(len(X))])  # one direction without variance
    assert np.isfinite(whiten(flat, regularization=1e-5)).all()
    with pytest.raises(ValueError, match="without variance"):
        whiten(flat, regularization=0.0)


def test_steps_run_in_order_and_are_named():
    X, _ = blobs()
    Z, name = preprocess(X, [{"method": "whitening"}, {"method": "umap", "n_components": 3, "n_neighbors": 10}])
    assert Z.shape == (len(X), 3)
    assert name == "whitening(12)+umap(12->3)"
    with pytest.raises(ValueError, match="n_components"):
        preprocess(X[:5], [{"method": "umap", "n_components": 4}])


def test_run_clustering_clusters_the_preprocessed_points_and_reports_it():
    X, y = blobs()
    out = run_clustering(X, "kmeans", {"n_clusters": 3}, preprocessing=[{"method": "whitening"}])
    assert out.reduction == "whitening(12)"
    assert adjusted_rand_score(y, out.labels) == 1.0


def test_steps_replace_hdbscans_own_reduction():
    X, y = blobs(d=64)  # above HDBSCAN_REDUCE_ABOVE_DIMS: the engine would reduce it itself
    default = run_clustering(X, "hdbscan", {"min_cluster_size": 20})
    assert default.reduction.startswith("PCA(64->50)")
    out = run_clustering(X, "hdbscan", {"min_cluster_size": 20}, preprocessing=[{"method": "none"}])
    assert out.reduction == "none"
    assert adjusted_rand_score(y, out.labels) > 0.9
