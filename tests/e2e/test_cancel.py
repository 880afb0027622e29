"""Cancellation: a pending or running run ends CANCELED within seconds; a finished one is a 400."""
from __future__ import annotations

import signal
import time

import pytest

from contracts.topics import DATASET_PREPARED, EXECUTION_REQUESTED, PREPARER, STATUS, STATUS_CHANGED
from tests.e2e.conftest import wait_for_task
from tests.e2e.test_algorithms_and_visualization import small_corpus  # noqa: F401  (fixture)
from tests.e2e.test_full_mode import create_cluster, execute
from tests.support.kafka import read_topic, wait_consumed

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


def test_a_cancel_stops_the_work_while_the_projector_lags(api, stack, settings, small_corpus):  # noqa: F811
    """The projector is down, so the CANCELED event waits on Kafka: the workers still see
    the cancel (the gateway's record of it) and do no work; once the projector is back
    the task is CANCELED, with no results."""
    collection_id, _ = small_corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 4}, defer_visualization=True)
    stack.kill("services.status", signal.SIGTERM)
    try:
        task = execute(api, cluster_id)
        run_id = task["additional_data"]["run_id"]
        r = api.delete(f"/v1/tasks/{task['task_id']}")
        assert r.status_code == 200 and r.json()["status"] == "CANCELED", r.text
        wait_consumed(settings, {PREPARER: [EXECUTION_REQUESTED.name]}, timeout=120)
        time.sleep(2)
        assert not [m for m in read_topic(settings, DATASET_PREPARED.name) if run_id.encode() in m.value]
    finally:
        stack.spawn("services.status")
    wait_consumed(settings, {STATUS: [EXECUTION_REQUESTED.name, STATUS_CHANGED.name]}, timeout=120)
    done = wait_for_task(api, task["task_id"], timeout=60, stack=stack)
    assert done["status"] == "CANCELED", done
    execution = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}").json()
    assert execution["status"] == "canceled" and execution["num_points"] == 0, execution
