"""Full-mode clustering through the real gateway, Kafka, workers, Postgres and S3."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from clusterflow.messaging import KafkaPublisher, make_broker
from contracts.events import ExecutionRequested, new_run_id, new_task_id
from contracts.topics import EXECUTION_REQUESTED
from tests.e2e.conftest import wait_for_task

pytestmark = pytest.mark.e2e

DIM = 384
GROUPS = 6
PER_GROUP = 350  # 2,100 documents


def separated_groups(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around GROUPS random directions, as sentence embeddings look."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(GROUPS, DIM))
    truth = np.repeat(np.arange(GROUPS), PER_GROUP)
    X = centers[truth] + rng.normal(scale=0.35, size=(len(truth), DIM))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), truth


@pytest.fixture(scope="module")
def corpus(api, stack):
    X, truth = separated_groups()
    r = api.post("/v1/collections", json={"collection_name": "e2e-groups", "embeddings": {"text": DIM}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    for start in range(0, len(X), 500):
        docs = [
            {"document_id": f"doc_{i:05d}",
             "payload": {"group": int(truth[i]), "title": f"document {i}", "meta": {"even": i % 2 == 0}},
             "embeddings": {"text": X[i].tolist()}}
            for i in range(start, min(start + 500, len(X)))
        ]
        r = api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs})
        assert r.status_code == 200, r.text
    return collection_id, X, truth


def create_cluster(api, collection_id: str, method: str, params: dict, **extra) -> str:
    r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": f"{method} run",
                                       "clustering_method": method, "algorithm_params": params, **extra})
    assert r.status_code == 200, r.text
    return r.json()["cluster_id"]


def execute(api, cluster_id: str, body: dict | None = None) -> dict:
    r = api.post(f"/v1/clusters/{cluster_id}/execute", json=body) if body is not None else \
        api.post(f"/v1/clusters/{cluster_id}/execute")
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["task_type"] == "engine_cluster_build" and task["status"] == "PENDING"
    return task


def members_of(api, cluster_id: str, run_id: str) -> dict[str, str]:
    assignment, offset = {}, 0
    while True:
        r = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/data",
                     json={"include_centroids": False, "include_members": True, "offset": offset, "limit": 1000})
        assert r.status_code == 200, r.text
        page = r.json()
        assignment.update({m["document_id"]: m["cluster_id"] for m in page["members"]})
        offset += 1000
        if offset >= page["pagination"]["total"]:
            return assignment


def ari(assignment: dict[str, str], truth: np.ndarray) -> float:
    ids = sorted(assignment)
    return adjusted_rand_score([truth[int(i.split("_")[1])] for i in ids], [assignment[i] for i in ids])


@pytest.mark.parametrize("method,params", [
    ("kmeans", {"n_clusters": GROUPS}),
    ("hdbscan", {"min_cluster_size": 50}),
])
def test_recovers_known_groups(api, stack, corpus, method, params):
    collection_id, X, truth = corpus
    cluster_id = create_cluster(api, collection_id, method, params)
    task = execute(api, cluster_id)
    run_id = task["additional_data"]["run_id"]

    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    assert done["outputs"][0]["num_clusters"] == GROUPS
    assert done["outputs"][0]["cluster_id"] == cluster_id
    assert done["additional_data"]["run_id"] == run_id
    assert done["error"] is None

    execution = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}").json()
    assert execution["status"] == "completed" and execution["num_points"] == len(X)
    assert sum(c["num_members"] for c in execution["centroids"]) == len(X)
    assert execution["metrics"]["silhouette_score"] > 0.1
    assert execution["metrics"]["davies_bouldin_index"] is not None
    assert api.get(f"/v1/clusters/{cluster_id}/executions").json()["run_id"] == run_id

    assignment = members_of(api, cluster_id, run_id)
    assert len(assignment) == len(X)
    assert ari(assignment, truth) >= 0.9

    data = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/data",
                    json={"include_members": True, "limit": 5}).json()
    assert len(data["centroids"]) == GROUPS
    member = data["members"][0]
    assert member["distance_to_centroid"] >= 0 and member["x"] is not None and member["y"] is not None


def test_a_cluster_without_a_method_runs_auto_and_says_what_it_chose(api, stack, corpus):
    collection_id, X, truth = corpus
    r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": "no method"})
    assert r.status_code == 200, r.text
    cluster = r.json()
    assert cluster["clustering_method"] == "auto" and cluster["algorithm_params"] == {}
    task = execute(api, cluster["cluster_id"])
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    choice = done["additional_data"]["method_choice"]
    assert "Leiden" in choice["pipeline"] and choice["criterion"] and choice["scores"]
    run_id = task["additional_data"]["run_id"]
    assert ari(members_of(api, cluster["cluster_id"], run_id), truth) >= 0.9
    data = api.post(f"/v1/clusters/{cluster['cluster_id']}/executions/{run_id}/data",
                    json={"include_members": True, "limit": 1000}).json()
    assert {m["assigned"] for m in data["members"]} <= {True, False}  # every member says core or assigned
    assert data["members"][0]["assigned"] is not None


def test_leiden_and_evoc_are_accepted_and_bad_values_get_422_naming_the_parameter(api, stack, corpus):
    collection_id, _, _ = corpus
    for method, params in (("leiden", {"resolution": 0.5}), ("evoc", {"noise_level": 0.2})):
        r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": method,
                                           "clustering_method": method, "algorithm_params": params})
        assert r.status_code == 200, r.text
    r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": "bad",
                                       "clustering_method": "leiden", "algorithm_params": {"objective_function": "x"}})
    assert r.status_code == 422
    assert "objective_function" in r.text and "RBConfiguration" in r.text


def test_same_seed_gives_same_assignments_and_3d_layout(api, stack, corpus):
    collection_id, X, truth = corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": GROUPS})
    first = execute(api, cluster_id, {"vis_n_components": 3})
    second = execute(api, cluster_id)
    for task in (first, second):
        assert wait_for_task(api, task["task_id"], stack=stack)["status"] == "COMPLETED"
    a = members_of(api, cluster_id, first["additional_data"]["run_id"])
    b = members_of(api, cluster_id, second["additional_data"]["run_id"])
    assert a == b
    page = api.post(f"/v1/clusters/{cluster_id}/executions/{first['additional_data']['run_id']}/data",
                    json={"include_members": True, "limit": 3}).json()
    assert all(m["z"] is not None for m in page["members"])

    listing = api.post(f"/v1/clusters/{cluster_id}/executions/list", json={"status": ["COMPLETED"]}).json()
    assert listing["total_count"] == 2 and listing["stats"]["executions_by_status"] == {"completed": 2}
    assert listing["stats"]["total_documents_clustered"] == 2 * len(X)


def test_filter_override_and_sample_size_are_applied_and_not_persisted(api, stack, corpus):
    collection_id, X, truth = corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 3})
    task = execute(api, cluster_id, {"filters": {"AND": [{"field": "group", "operator": "lt", "value": 3}]},
                                     "sample_size": 600})
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    sampling = done["additional_data"]["sampling"]
    assert sampling["matched"] == 3 * PER_GROUP and sampling["sampled"] == 600
    assignment = members_of(api, cluster_id, done["additional_data"]["run_id"])
    assert len(assignment) == 600
    assert all(truth[int(i.split("_")[1])] < 3 for i in assignment)
    assert api.get(f"/v1/clusters/{cluster_id}").json()["filters"] is None


def test_impossible_parameters_end_failed_with_the_reason(api, stack, corpus):
    collection_id, _, _ = corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 5000})
    task = execute(api, cluster_id)
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "FAILED"
    assert "5000" in done["error"] and done["additional_data"]["error"] == done["error"]
    execution = api.get(f"/v1/clusters/{cluster_id}/executions/{task['additional_data']['run_id']}").json()
    assert execution["status"] == "failed" and execution["error_message"] == done["error"]
    # The clusterer's handler failed it: the execution shows where (the last frames), not the task.
    traceback = execution["error_traceback"]
    assert traceback and len(traceback) <= 4096, traceback
    assert "in _full_in_process" in traceback and "RunFailed: clustering failed" in traceback, traceback
    assert "error_traceback" not in done["additional_data"]
    # A run without results is a bad state for its data: 400, not 404 or 500.
    r = api.post(f"/v1/clusters/{cluster_id}/executions/{task['additional_data']['run_id']}/data", json={})
    assert r.status_code == 400 and r.json()["error"]["code"] == "results_not_ready"


def test_no_matching_documents_fails_with_a_clear_message(api, stack, corpus):
    collection_id, _, _ = corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 2},
                                filters={"AND": [{"field": "group", "operator": "eq", "value": 99}]})
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "FAILED" and "no documents match" in done["error"]


def test_a_run_published_straight_to_kafka_appears_like_any_other(api, stack, corpus, settings):
    collection_id, X, _ = corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": GROUPS})
    run_id, task_id = new_run_id(), new_task_id()

    async def publish() -> None:
        broker = make_broker(settings, client_id="e2e-external")
        await broker.connect()
        try:
            await KafkaPublisher(broker, settings.topic_prefix).publish(EXECUTION_REQUESTED, ExecutionRequested(
                namespace="e2e", run_id=run_id, cluster_id=cluster_id, task_id=task_id))
        finally:
            await broker.stop()

    asyncio.run(publish())
    done = wait_for_task(api, task_id, stack=stack, unknown_for=30)
    assert done["status"] == "COMPLETED" and done["outputs"][0]["num_clusters"] == GROUPS
    execution = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}").json()
    assert execution["task_id"] == task_id and execution["num_points"] == len(X)


def test_errors_use_the_reference_shapes(api, corpus):
    collection_id, _, _ = corpus
    r = api.post("/v1/clusters/clust_nope/execute")
    assert r.status_code == 404
    body = r.json()
    assert body["success"] is False and body["status"] == 404 and body["error"]["type"] == "NotFoundError"
    assert api.get("/v1/tasks/task_nope").status_code == 404
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 2})
    r = api.get(f"/v1/clusters/{cluster_id}/executions/run_nope")
    assert r.status_code == 404 and r.json()["error"]["details"]["resource"] == "execution"

    r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"sample_size": 2_000_000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "sample_size"
    r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"unknown_field": 1})
    assert r.status_code == 422
    r = api.post(f"/v1/clusters/{cluster_id}/execute", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422

    r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": "bad",
                                       "clustering_method": "kmeans", "algorithm_params": {"n_clusters": 1}})
    assert r.status_code == 422 and "n_clusters" in r.json()["detail"][0]["msg"]

    r = api.post(f"/v1/collections/{collection_id}/documents",
                 json={"documents": [{"document_id": "short", "embeddings": {"text": [0.1, 0.2]}}]})
    assert r.status_code == 422 and "dimension mismatch" in r.json()["detail"][0]["msg"]
