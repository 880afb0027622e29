"""Cancellation: a pending or running run ends CANCELED within seconds; a finished one is a 400."""
from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import wait_for_task
from tests.e2e.test_algorithms_and_visualization import small_corpus  # noqa: F401  (fixture)
from tests.e2e.test_full_mode import create_cluster, execute

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("how", ["execution", "task"])
def test_cancel_a_run_in_flight(api, stack, small_corpus, how):  # noqa: F811
    collection_id, _ = small_corpus
    # An inline 3D layout keeps the run busy for a while.
    cluster_id = create_cluster(api, collection_id, "hdbscan", {"min_cluster_size": 20}, vis_n_components=3)
    task = execute(api, cluster_id)
    run_id = task["additional_data"]["run_id"]
    if how == "execution":
        r = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/cancel")
    else:
        r = api.delete(f"/v1/tasks/{task['task_id']}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCELED"
    started = time.monotonic()
    done = wait_for_task(api, task["task_id"], timeout=30, stack=stack)
    assert done["status"] == "CANCELED" and time.monotonic() - started < 10

    # It stays canceled: no worker reopens it, and no results appear.
    time.sleep(5)
    execution = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}").json()
    assert execution["status"] == "canceled" and execution["task_status"] == "CANCELED"
    # Killing a canceled task again is idempotent.
    assert api.delete(f"/v1/tasks/{task['task_id']}").status_code == 200


def test_cancelling_a_finished_run_is_a_400(api, stack, small_corpus):  # noqa: F811
    collection_id, _ = small_corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 4}, defer_visualization=True)
    task = execute(api, cluster_id)
    assert wait_for_task(api, task["task_id"], stack=stack)["status"] == "COMPLETED"
    r = api.post(f"/v1/clusters/{cluster_id}/executions/{task['additional_data']['run_id']}/cancel")
    assert r.status_code == 400 and r.json()["error"]["code"] == "run_finished"
    assert api.delete(f"/v1/tasks/{task['task_id']}").status_code == 400
    assert api.post(f"/v1/clusters/{cluster_id}/executions/run_nope/cancel").status_code == 404
