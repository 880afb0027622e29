"""The gateway's run routes over fakes (no servers): the app comes from the gateway's
composition root (`create_app(gateway=...)`) with the repository, publisher and object
store of tests/fakes. What a route decides: execute records the request and queues
its event, a task reads PENDING before the projector saw it, a finished run cannot be
canceled, another namespace's resources are not found, and S3 is never called on the
event loop's thread."""
from __future__ import annotations

import polars as pl
import pytest
from fastapi.testclient import TestClient

from clusterflow.settings import Settings
from contracts.api import TaskStatusEnum
from contracts.events import ExecutionRequested, RunStatusChanged
from contracts.topics import EXECUTION_REQUESTED, STATUS_CHANGED
from services.gateway.app import create_app
from services.gateway.deps import Gateway
from tests.fakes import FakeGatewayRepository, OffLoopObjectStore, RecordingPublisher

NS = {"X-Namespace": "team-a"}
OTHER = {"X-Namespace": "team-b"}
ARTIFACTS = {"members_key": "team-a/clust_1/run_done/members.parquet",
             "centroids_key": "team-a/clust_1/run_done/centroids.parquet",
             "coords_key": "team-a/clust_1/run_done/coords.parquet"}
CENTROIDS = [{"cluster_id": "cl_0", "num_members": 2, "label": "Kings", "stable_id": "sc_1"},
             {"cluster_id": "cl_1", "num_members": 1, "label": "Queens", "stable_id": "sc_2"}]


@pytest.fixture
def gw():
    gateway = Gateway(settings=Settings(auth_required=False), repo=FakeGatewayRepository(),
                      publisher=RecordingPublisher(), store=OffLoopObjectStore())
    gateway.repo.add_cluster("team-a", "clust_1", cluster_name="first")
    gateway.repo.add_execution("team-a", "clust_1", "run_done", "COMPLETED", num_clusters=2, num_points=3,
                               artifacts=ARTIFACTS, centroids=CENTROIDS, metrics={"silhouette_score": 0.4})
    gateway.repo.add_execution("team-a", "clust_1", "run_busy", "PROCESSING")
    gateway.repo.add_cluster("team-b", "clust_b")
    gateway.repo.add_execution("team-b", "clust_b", "run_b", "PROCESSING")
    gateway.store.put_parquet(ARTIFACTS["members_key"], pl.DataFrame(
        {"document_id": ["d1", "d2", "d3"], "cluster_id": ["cl_0", "cl_0", "cl_1"],
         "distance_to_centroid": [0.1, 0.2, 0.3]}))
    gateway.store.put_parquet(ARTIFACTS["coords_key"], pl.DataFrame(
        {"document_id": ["d3", "d2", "d1"], "x": [3.0, 2.0, 1.0], "y": [-3.0, -2.0, -1.0]}))
    gateway.store.calls.clear()
    return gateway


@pytest.fixture
def client(gw):
    with TestClient(create_app(gateway=gw)) as c:
        yield c


# ------------------------------------------------------------------------- execute


def test_execute_records_the_request_and_queues_its_event(client, gw):
    r = client.post("/v1/clusters/first/execute", json={"sample_size": 500}, headers=NS)
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["status"] == "PENDING" and task["queue_position"] == 1
    run_id = task["additional_data"]["run_id"]
    [event] = gw.publisher.on(EXECUTION_REQUESTED)
    assert isinstance(event, ExecutionRequested)
    assert (event.run_id, event.task_id, event.namespace, event.cluster_id) == \
        (run_id, task["task_id"], "team-a", "clust_1")
    assert event.options.sample_size == 500
    request = gw.repo.requests[run_id]
    assert request["task_id"] == task["task_id"] and request["namespace"] == "team-a"
    assert request["options"]["sample_size"] == 500 and request["options"]["mode"] == "full"


def test_a_task_reads_pending_before_the_projector_has_seen_it(client, gw):
    task = client.post("/v1/clusters/clust_1/execute", headers=NS).json()
    r = client.get(f"/v1/tasks/{task['task_id']}", headers=NS)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "PENDING" and body["task_type"] == task["task_type"]
    assert body["additional_data"]["run_id"] == task["additional_data"]["run_id"]
    assert body["additional_data"]["stage"] == "queued"  # the projector's first shape (clusterflow/readmodel.py)
    run = client.get(f"/v1/clusters/clust_1/executions/{task['additional_data']['run_id']}", headers=NS).json()
    assert run["task_status"] == "PENDING" and run["task_id"] == task["task_id"]
    assert client.get(f"/v1/tasks/{task['task_id']}", headers=OTHER).status_code == 404


def test_execute_with_the_bus_away_is_503_and_leaves_no_request(client, gw):
    gw.publisher.away = ConnectionError("kafka is away")
    r = client.post("/v1/clusters/clust_1/execute", headers=NS)
    assert r.status_code == 503 and r.json()["error"]["code"] == "event_bus_unavailable"
    assert gw.repo.requests == {} and len(gw.repo.forgotten) == 1


def test_assign_pins_the_latest_completed_full_run_and_needs_one(client, gw):
    r = client.post("/v1/clusters/clust_1/execute", json={"mode": "assign"}, headers=NS)
    assert r.status_code == 200, r.text
    [event] = gw.publisher.on(EXECUTION_REQUESTED)
    assert event.source_run_id == "run_done" and r.json()["additional_data"]["source_run_id"] == "run_done"
    gw.repo.add_cluster("team-a", "clust_new")
    r = client.post("/v1/clusters/clust_new/execute", json={"mode": "assign"}, headers=NS)
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_source_run"
    assert len(gw.publisher.on(EXECUTION_REQUESTED)) == 1


# -------------------------------------------------------------------------- cancel


def test_cancel_of_a_finished_run_is_400_and_changes_nothing(client, gw):
    r = client.post("/v1/clusters/clust_1/executions/run_done/cancel", headers=NS)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "run_finished" and "COMPLETED" in r.json()["error"]["message"]
    assert gw.repo.canceled == [] and gw.publisher.published == []
    assert client.delete("/v1/tasks/task_run_done", headers=NS).status_code == 400


def test_cancel_of_a_running_run_records_it_then_reports_canceled(client, gw):
    r = client.post("/v1/clusters/clust_1/executions/run_busy/cancel", headers=NS)
    assert r.status_code == 200 and r.json()["status"] == "CANCELED"
    assert gw.repo.canceled == ["run_busy"]
    [report] = gw.publisher.on(STATUS_CHANGED)
    assert isinstance(report, RunStatusChanged)
    assert (report.run_id, report.status, report.service) == ("run_busy", TaskStatusEnum.CANCELED, "gateway")


# ----------------------------------------------------------------------- namespaces


def test_another_namespaces_run_is_not_found(client, gw):
    assert client.get("/v1/clusters/clust_b/executions/run_b", headers=NS).status_code == 404
    r = client.post("/v1/clusters/clust_b/executions/run_b/cancel", headers=NS)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Cluster not found"
    r = client.post("/v1/clusters/clust_1/executions/run_b/cancel", headers=NS)  # under one's own cluster
    assert r.status_code == 404 and r.json()["error"]["message"] == "Execution not found"
    assert client.delete("/v1/tasks/task_run_b", headers=NS).status_code == 404
    assert gw.repo.canceled == [] and gw.publisher.published == []
    assert client.get("/v1/clusters/clust_b/executions/run_b", headers=OTHER).status_code == 200


# -------------------------------------------------------------- S3 off the event loop


def test_results_are_read_from_s3_off_the_event_loop(client, gw):
    r = client.get("/v1/clusters/clust_1/executions/run_done/visualization", headers=NS)
    assert r.status_code == 200, r.text
    points = {p["document_id"]: (p["x"], p["label"]) for p in r.json()["points"]}
    assert points == {"d1": (1.0, "Kings"), "d2": (2.0, "Kings"), "d3": (3.0, "Queens")}
    r = client.post("/v1/clusters/clust_1/executions/run_done/data", json={"include_members": True, "include_centroids": False}, headers=NS)
    assert r.status_code == 200 and len(r.json()["members"]) == 3
    r = client.get("/v1/clusters/clust_1/executions/run_done/export?format=parquet", headers=NS)
    assert r.status_code == 200 and gw.store.exists(r.json()["s3_key"])
    used = {name for name, _ in gw.store.calls}
    # each call passed the store's guard: none was made on the event loop's thread
    assert {"exists", "get_parquet", "put_parquet", "presigned_url"} <= used


def test_deleting_a_cluster_deletes_its_artifacts_off_the_event_loop(client, gw):
    r = client.delete("/v1/clusters/clust_1", headers=NS)
    assert r.status_code == 200 and r.json()["artifacts_deleted"] == 2
    assert gw.store.objects == {} and [n for n, _ in gw.store.calls] == ["delete_prefix"]


def test_the_store_fails_a_call_made_on_the_event_loop():
    """What the tests above rely on: a blocking store call inside `async def` is caught."""
    import asyncio

    store = OffLoopObjectStore()

    async def on_the_loop() -> None:
        store.exists("k")

    async def in_a_thread() -> bool:
        return await asyncio.to_thread(store.exists, "k")

    with pytest.raises(AssertionError, match="ObjectStore.exists was called on the event loop"):
        asyncio.run(on_the_loop())
    assert asyncio.run(in_a_thread()) is False and len(store.calls) == 1
