"""layout_stability through REST: the cluster's setting and the run's override,
validated; what each run applied, in its execution result and task; and the
displacement of the shared documents between two runs with and without alignment,
measured on the layouts the service serves."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from tests.e2e.conftest import wait_for_task
from tests.e2e.test_full_mode import create_cluster, execute
from tests.unit.test_layout_stability import displacement, grid_corpus

pytestmark = pytest.mark.e2e
DIM = 16


@pytest.fixture(scope="module")
def grid(api):
    """450 documents in 9 groups on a grid (a shape a map can keep), and 45 more to add."""
    draw = grid_corpus(seed=5)
    X, extra = draw(450), draw(45)
    r = api.post("/v1/collections", json={"collection_name": f"e2e-stable-{uuid.uuid4().hex[:8]}",
                                          "embeddings": {"v": DIM}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    docs = [{"document_id": f"doc_{i:05d}", "payload": {"title": f"point {i}"}, "embeddings": {"v": X[i].tolist()}}
            for i in range(len(X))]
    assert api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs}).status_code == 200
    more = [{"document_id": f"new_{i:05d}", "payload": {"title": f"new point {i}"},
             "embeddings": {"v": extra[i].tolist()}} for i in range(len(extra))]
    return collection_id, more


def run(api, stack, cluster_id: str, body: dict | None = None) -> tuple[dict, dict]:
    """Execute and wait: (the execution result, the task)."""
    task = wait_for_task(api, execute(api, cluster_id, body)["task_id"], stack=stack)
    assert task["status"] == "COMPLETED", task
    run_id = task["additional_data"]["run_id"]
    r = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}")
    assert r.status_code == 200, r.text
    return r.json(), task


def layout(api, cluster_id: str, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    url = f"/v1/clusters/{cluster_id}/executions/{run_id}/visualization"
    r = api.get(url, params={"limit": 10_000})
    deadline = time.monotonic() + 300
    while r.status_code == 202 and time.monotonic() < deadline:
        time.sleep(1)
        r = api.get(url, params={"limit": 10_000})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    return np.array([p["document_id"] for p in points]), np.array([[p["x"], p["y"]] for p in points])


def test_bad_layout_stability_is_422_naming_the_field_and_the_values(api, grid):
    collection_id, _ = grid
    r = api.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": "bad stability",
                                       "clustering_method": "kmeans", "algorithm_params": {"n_clusters": 9},
                                       "layout_stability": "sideways"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == "layout_stability" and "'align', 'transform' or 'none'" in detail["msg"]
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 9})
    r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"layout_stability": "sideways"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "layout_stability"] and "'align', 'transform' or 'none'" in detail["msg"]


def test_runs_keep_the_maps_shape_and_report_what_they_applied(api, stack, grid):
    collection_id, more = grid
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 9})
    assert api.get(f"/v1/clusters/{cluster_id}").json()["layout_stability"] == "align"  # nothing set

    first, task = run(api, stack, cluster_id)
    assert first["layout_stability_applied"] == "none"
    assert "no previous completed run of this cluster" in first["layout_stability_reason"]
    assert task["additional_data"]["layout_stability_applied"] == "none"

    # Documents are added; the next run aligns (the cluster's default) ...
    assert api.post(f"/v1/collections/{collection_id}/documents", json={"documents": more}).status_code == 200
    aligned, task = run(api, stack, cluster_id)
    assert aligned["num_points"] == 495
    assert aligned["layout_stability_applied"] == "aligned"
    assert aligned["layout_stability_reason"] == f"aligned to run {first['run_id']} on 450 shared documents"
    assert task["additional_data"]["layout_stability_reason"] == aligned["layout_stability_reason"]
    # ... and a run over the same documents that asks for none is laid out fresh.
    fresh, task = run(api, stack, cluster_id, {"layout_stability": "none"})
    assert fresh["layout_stability_applied"] == "none"
    assert fresh["layout_stability_reason"] == "layout_stability 'none': a fresh layout"
    assert task["inputs"][0]["overrides"]["layout_stability"] == "none"

    before = layout(api, cluster_id, first["run_id"])
    with_ = displacement(*layout(api, cluster_id, aligned["run_id"])[::-1], *before[::-1])
    without = displacement(*layout(api, cluster_id, fresh["run_id"])[::-1], *before[::-1])
    print(f"shared documents moved {without:.3f} of the map's extent without alignment, {with_:.3f} with")
    assert with_ < 0.35 * without

    # transform after a run that kept no projection: it aligns and says why, and keeps
    # the projection it fitted, which the next transform run reuses.
    fitted, _ = run(api, stack, cluster_id, {"layout_stability": "transform"})
    assert fitted["layout_stability_applied"] == "aligned"
    assert fitted["layout_stability_reason"].startswith(
        f"cannot transform: run {fresh['run_id']} stored no fitted projection")
    placed, _ = run(api, stack, cluster_id, {"layout_stability": "transform"})
    assert placed["layout_stability_applied"] == "transform"
    assert placed["layout_stability_reason"] == f"placed with the UMAP projection of run {fitted['run_id']}"
    moved = displacement(*layout(api, cluster_id, placed["run_id"])[::-1],
                         *layout(api, cluster_id, fitted["run_id"])[::-1])
    assert moved < 0.1

    # A deferred layout reports what it applied once it is computed (a Kafka command).
    deferred, task = run(api, stack, cluster_id, {"defer_visualization": True})
    assert deferred["layout_stability_applied"] is None and deferred["layout_stability_reason"] is None
    layout(api, cluster_id, deferred["run_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deferred = api.get(f"/v1/clusters/{cluster_id}/executions/{deferred['run_id']}").json()
        if deferred["layout_stability_applied"] is not None:
            break
        time.sleep(0.5)
    assert deferred["status"] == "completed" and deferred["layout_stability_applied"] == "aligned"
    assert deferred["layout_stability_reason"] == f"aligned to run {placed['run_id']} on 495 shared documents"
    task = api.get(f"/v1/tasks/{task['task_id']}").json()
    assert task["status"] == "COMPLETED" and task["additional_data"]["layout_stability_applied"] == "aligned"
