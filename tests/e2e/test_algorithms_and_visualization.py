"""Every algorithm through the service, sampling caps, and the (deferred) visualization."""
from __future__ import annotations

import time

import uuid

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tests.e2e.conftest import wait_for_task
from tests.e2e.test_full_mode import create_cluster, execute, members_of

pytestmark = pytest.mark.e2e

DIM = 16
GROUPS = 4
PER_GROUP = 150


@pytest.fixture(scope="module")
def small_corpus(api):
    """600 low-dimensional points in 4 tight groups: every algorithm can recover them."""
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=6, size=(GROUPS, DIM))
    truth = np.repeat(np.arange(GROUPS), PER_GROUP)
    X = (centers[truth] + rng.normal(scale=0.4, size=(len(truth), DIM))).astype(np.float32)
    r = api.post("/v1/collections", json={"collection_name": f"e2e-small-{uuid.uuid4().hex[:8]}", "embeddings": {"v": DIM}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    docs = [{"document_id": f"doc_{i:05d}", "payload": {"group": int(truth[i]), "title": f"point {i}"},
             "embeddings": {"v": X[i].tolist()}} for i in range(len(X))]
    assert api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs}).status_code == 200
    return collection_id, truth


ALGORITHMS = [
    ("kmeans", {"n_clusters": "auto"}),
    ("dbscan", {"eps": 3.0, "min_samples": 5}),
    ("hdbscan", {"min_cluster_size": 30}),
    ("agglomerative", {"n_clusters": GROUPS, "linkage": "ward"}),
    ("spectral", {"n_clusters": GROUPS, "affinity": "nearest_neighbors"}),
    ("gaussian_mixture", {"n_components": GROUPS}),
    ("mean_shift", {"bandwidth": 3.0, "bin_seeding": True}),
    ("optics", {"min_samples": 10, "cluster_method": "dbscan", "max_eps": 3.0}),
]


@pytest.mark.parametrize("method,params", ALGORITHMS, ids=[a[0] for a in ALGORITHMS])
def test_every_algorithm_recovers_the_groups(api, stack, small_corpus, method, params):
    collection_id, truth = small_corpus
    cluster_id = create_cluster(api, collection_id, method, params, defer_visualization=True)
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    assert done["outputs"][0]["num_clusters"] == GROUPS
    assignment = members_of(api, cluster_id, done["additional_data"]["run_id"])
    ids = sorted(assignment)
    ari = adjusted_rand_score([truth[int(i.split("_")[1])] for i in ids], [assignment[i] for i in ids])
    assert ari >= 0.9, (method, ari)


def test_noise_is_cluster_minus_one_with_its_count(api, stack, small_corpus):
    collection_id, _ = small_corpus
    cluster_id = create_cluster(api, collection_id, "dbscan", {"eps": 1.6, "min_samples": 10},
                                defer_visualization=True)
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    execution = api.get(f"/v1/clusters/{cluster_id}/executions/{done['additional_data']['run_id']}").json()
    noise = [c for c in execution["centroids"] if c["cluster_id"] == "cl_-1"]
    assert noise and noise[0]["num_members"] == execution["noise_count"] > 0
    assert sum(c["num_members"] for c in execution["centroids"]) == execution["num_points"]


@pytest.mark.parametrize("method,params,message", [
    ("kmeans", {"n_clusters": 0}, "n_clusters"),
    ("hdbscan", {"cluster_selection_method": "middle"}, "cluster_selection_method"),
    ("optics", {"xi": 1.5}, "xi"),
    ("spectral", {"unknown": 1}, "unknown"),
    ("no_such_method", {}, "clustering_method"),
])
def test_bad_algorithm_parameters_are_422_naming_the_parameter(api, small_corpus, method, params, message):
    collection_id, _ = small_corpus
    r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": "bad",
                                       "clustering_method": method, "algorithm_params": params})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert message in detail["msg"] or message in detail["loc"], detail


def test_preprocessing_steps_run_in_order_before_clustering(api, stack, small_corpus):
    """The hosted SDK's preprocessing_steps: stored with their defaults, applied by the
    clusterer before the method, named in the run's estimator."""
    collection_id, truth = small_corpus
    steps = [{"method": "whitening"}, {"method": "umap", "n_components": 5, "n_neighbors": 15}]
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": GROUPS}, defer_visualization=True,
                                preprocessing_steps=steps)
    stored = api.get(f"/v1/clusters/{cluster_id}").json()["preprocessing_steps"]
    assert [s["method"] for s in stored] == ["whitening", "umap"]
    assert stored[0]["regularization"] == 1e-5 and stored[1]["metric"] == "cosine"
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    assert "whitening(16)+umap(16->5)" in done["additional_data"]["estimator"], done["additional_data"]
    assignment = members_of(api, cluster_id, done["additional_data"]["run_id"])
    ids = sorted(assignment)
    assert adjusted_rand_score([truth[int(i.split("_")[1])] for i in ids], [assignment[i] for i in ids]) >= 0.9


@pytest.mark.parametrize("steps,message", [
    ([{"method": "tsne"}], "must be one of 'whitening', 'umap', 'none'"),
    ([{"method": "umap", "n_components": 1}], "preprocessing_steps[0].n_components"),
])
def test_bad_preprocessing_steps_are_422_naming_the_field(api, small_corpus, steps, message):
    collection_id, _ = small_corpus
    r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": "bad",
                                       "clustering_method": "kmeans", "preprocessing_steps": steps})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == "preprocessing_steps" and message in detail["msg"], detail


def test_filters_that_cannot_be_applied_are_400(api, small_corpus):
    collection_id, _ = small_corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 2})
    cases = [
        {"AND": [{"field": "title", "operator": "regex", "value": "(unclosed"}]},
        {"AND": [{"field": "group", "operator": "gt", "value": {"an": "object"}}]},
        {"AND": [{"field": "group", "operator": "in", "value": 3}]},
        {"AND": [{"field": "group", "operator": "eq", "value": {"type": "dynamic", "field": "inputs.group"}}]},
    ]
    deep = {"AND": [{"field": "group", "operator": "eq", "value": 1}]}
    for _ in range(12):
        deep = {"AND": [deep]}
    for flt in [*cases, deep]:
        r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"filters": flt})
        assert r.status_code == 400, (flt, r.text)
        assert r.json()["success"] is False and r.json()["error"]["message"]
    r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"filters": cases[3]})
    assert "runtime inputs" in r.json()["error"]["message"]


def test_sampling_cap_is_reported(api, stack, small_corpus):
    collection_id, _ = small_corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 4}, sample_size=200,
                                defer_visualization=True)
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    sampling = done["additional_data"]["sampling"]
    assert sampling["matched"] == GROUPS * PER_GROUP and sampling["sampled"] == 200
    assert "sample" in sampling["reason"]


@pytest.mark.parametrize("n_components", [2, 3])
def test_deferred_visualization_is_computed_once_then_read(api, stack, small_corpus, n_components):
    collection_id, _ = small_corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": GROUPS}, defer_visualization=True,
                                vis_n_components=n_components)
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    run_id = done["additional_data"]["run_id"]
    data = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/data",
                    json={"include_members": True, "limit": 3}).json()
    assert data["members"][0]["x"] is None  # deferred: no layout yet

    url = f"/v1/clusters/{cluster_id}/executions/{run_id}/visualization"
    started = time.monotonic()
    asked = api.get(url, params={"limit": 250})
    # answered at once: the clusterer computes the layout (a Kafka command), the gateway never
    assert time.monotonic() - started < 5
    assert asked.status_code == 202 and asked.headers["Retry-After"]
    assert asked.json()["status"] == "computing" and asked.json()["computed_now"] is True
    assert asked.json()["points"] == []
    again = api.get(url, params={"limit": 250})  # asked again meanwhile: no second computation
    assert again.status_code in (200, 202) and again.json()["computed_now"] is False
    deadline = time.monotonic() + 300
    while again.status_code == 202 and time.monotonic() < deadline:
        time.sleep(1)
        again = api.get(url, params={"limit": 250})
    assert again.status_code == 200, again.text
    first = again.json()
    assert first["status"] == "ready" and first["n_components"] == n_components
    assert first["pagination"]["total"] == GROUPS * PER_GROUP and len(first["points"]) == 250
    point = first["points"][0]
    assert point["cluster_id"].startswith("cl_") and point["x"] is not None
    assert (point["z"] is not None) == (n_components == 3)
    second = api.get(url, params={"limit": 250}).json()
    # Same stored layout (labels may arrive in between: the labeler follows completion).
    def coords(page):
        return [(p["document_id"], p["cluster_id"], p["x"], p["y"], p["z"]) for p in page["points"]]

    assert second["computed_now"] is False and coords(second) == coords(first)
    rest = api.get(url, params={"offset": 500, "limit": 250}).json()
    assert len(rest["points"]) == 100
    data = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/data",
                    json={"include_members": True, "limit": 3}).json()
    assert data["members"][0]["x"] is not None  # the data endpoint reads the stored layout too


def test_inline_visualization_is_served_without_computing(api, stack, small_corpus):
    collection_id, _ = small_corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": GROUPS})
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    vis = api.get(f"/v1/clusters/{cluster_id}/executions/{done['additional_data']['run_id']}/visualization").json()
    assert vis["computed_now"] is False and len(vis["points"]) == GROUPS * PER_GROUP
