"""Faults survived on the real servers: a worker killed with SIGKILL mid-run, Kafka
restarted mid-run, S3 away for 10 s, Postgres restarted mid-run; and the watchdog that
ends a run that stopped progressing.

These restart the shared servers (deploy/local/servers.sh), which other test sessions
on the machine may be using: each fault is short and every server is brought back in
a `finally`.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from clusterflow.db.schema import processed_events, run_events, run_requests
from contracts.events import derived_event_id
from contracts.topics import EXECUTION_CLUSTERED, PREPARER, STATUS, STATUS_CHANGED, consumed_by
from tests.e2e.conftest import TERMINAL, wait_for_task
from tests.support.corpus import make_cluster, make_collection, start_run
from tests.support.kafka import execute, query, read_topic, snapshot, wait_consumed

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ROOT / "deploy" / "local" / "servers.sh"


def servers(action: str, name: str) -> None:
    done = subprocess.run(["bash", str(SERVERS), action, name], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"servers.sh {action} {name}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def busy_cluster(api):
    """Runs that keep the clusterer busy for seconds, even warm: 12,000 points and an
    inline 3D layout."""
    collection_id = make_collection(api, groups=6, per_group=2000, dim=32, seed=41)
    return make_cluster(api, collection_id, "kmeans", {"n_clusters": 6}, vis_n_components=3)


def wait_until(api, task_id: str, predicate, timeout: float = 120, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    task = None
    while time.monotonic() < deadline:
        r = api.get(f"/v1/tasks/{task_id}")
        if r.status_code == 200:
            task = r.json()
            if predicate(task):
                return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never {what}: {task}")


def clustering(task: dict) -> bool:
    """The clusterer has the run (it loaded the dataset and is clustering or laying out)."""
    assert task["status"] not in TERMINAL, f"the run ended before the fault could hit it: {task}"
    return task["additional_data"].get("progress", 0) >= 0.2 and task["additional_data"].get("stage") in (
        "loading", "clustering", "metrics", "layout")


def start_in_clusterer(api, cluster_id: str, body: dict | None = None) -> dict:
    """A run caught while the clusterer works on it (a new one if one slipped through)."""
    for attempt in range(3):
        task = start_run(api, cluster_id, body)
        try:
            wait_until(api, task["task_id"], clustering, what="reached the clusterer")
            return task
        except AssertionError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def all_alive(stack) -> None:
    dead = {n: p.returncode for n, p in stack.processes.items() if p.poll() is not None}
    assert not dead, f"services died: {dead}\n{stack.log_tails()}"


def assert_applied_once(settings, run_id: str) -> dict:
    """One execution, one set of results, and every event of the run in the read model
    once: nothing lost, nothing doubled."""
    wait_consumed(settings, {STATUS: [t.name for t in consumed_by(STATUS)]}, timeout=120)
    snap = snapshot(settings, [run_id])
    assert len(snap["executions"]) == 1 and len(snap["tasks"]) == 1
    execution = snap["executions"][0]
    assert execution["status"] == "COMPLETED" and execution["artifacts"]["members_key"].endswith(
        f"/{run_id}/members.parquet")
    by_topic = {t.name: {json.loads(r.value)["event_id"] for r in read_topic(settings, t.name)
                         if f'"run_id":"{run_id}"'.encode() in r.value} for t in consumed_by(STATUS)}
    clustered = by_topic[EXECUTION_CLUSTERED.name]
    assert clustered == {derived_event_id(run_id, EXECUTION_CLUSTERED.name)}  # one ExecutionClustered, however often sent
    applied = {r["event_id"] for r in query(settings, select(processed_events.c.event_id).where(
        processed_events.c.consumer == "status",
        processed_events.c.event_id.in_(set().union(*by_topic.values()))))}
    assert applied == set().union(*by_topic.values()), "events were lost on the way to the read model"
    history = query(settings, select(run_events.c.event_id).where(run_events.c.run_id == run_id))
    assert {r["event_id"] for r in history} == by_topic[STATUS_CHANGED.name]
    assert len(history) == len(by_topic[STATUS_CHANGED.name])
    return execution


def log_since(stack, name: str, offset: int) -> str:
    path = stack.log_dir / f"{name}.log"
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def log_size(stack, name: str) -> int:
    path = stack.log_dir / f"{name}.log"
    return path.stat().st_size if path.exists() else 0


def test_clusterer_killed_mid_run_and_restarted_completes_once(api, stack, settings, busy_cluster):
    task = start_in_clusterer(api, busy_cluster)
    run_id = task["additional_data"]["run_id"]
    stack.kill("services.clusterer", signal.SIGKILL)
    try:
        time.sleep(1)
    finally:
        stack.spawn("services.clusterer")
    # The dead member holds its partitions until its session times out; then the
    # redelivered DatasetPrepared is clustered again from the start.
    done = wait_for_task(api, task["task_id"], timeout=300, stack=stack)
    assert done["status"] == "COMPLETED", done
    execution = assert_applied_once(settings, run_id)
    assert execution["num_points"] == 12000 and execution["num_clusters"] == 6
    all_alive(stack)


def test_kafka_restarted_mid_run_completes(api, stack, settings, busy_cluster):
    task = start_in_clusterer(api, busy_cluster)
    run_id = task["additional_data"]["run_id"]
    started = time.monotonic()
    try:
        servers("restart", "kafka")
    finally:
        servers("start", "kafka")
    restart_s = time.monotonic() - started
    done = wait_for_task(api, task["task_id"], timeout=300, stack=stack)
    assert done["status"] == "COMPLETED", done
    assert_applied_once(settings, run_id)
    all_alive(stack)
    # And the system takes new work afterwards.
    after = start_run(api, busy_cluster, {"vis_n_components": 2})
    assert wait_for_task(api, after["task_id"], timeout=300, stack=stack)["status"] == "COMPLETED"
    print(f"kafka restart took {restart_s:.1f}s")


def test_s3_away_for_10s_is_retried_and_the_run_completes(api, stack, settings, busy_cluster):
    offset = log_size(stack, "services.preparer")
    servers("stop", "s3")
    try:
        task = start_run(api, busy_cluster, {"vis_n_components": 2})
        time.sleep(10)
    finally:
        servers("start", "s3")
    done = wait_for_task(api, task["task_id"], timeout=300, stack=stack)
    assert done["status"] == "COMPLETED", done
    assert_applied_once(settings, task["additional_data"]["run_id"])
    log = log_since(stack, "services.preparer", offset)
    assert "retrying in" in log, log[-3000:]  # the dataset upload failed while S3 was away, and was retried
    all_alive(stack)


def test_postgres_restarted_mid_run_the_projector_catches_up(api, stack, settings, busy_cluster):
    task = start_in_clusterer(api, busy_cluster)
    run_id = task["additional_data"]["run_id"]
    before = len(query(settings, select(run_events.c.event_id).where(run_events.c.run_id == run_id)))
    try:
        servers("restart", "postgres")
    finally:
        servers("start", "postgres")
    done = wait_for_task(api, task["task_id"], timeout=300, stack=stack)
    assert done["status"] == "COMPLETED", done
    assert_applied_once(settings, run_id)
    assert len(query(settings, select(run_events.c.event_id).where(run_events.c.run_id == run_id))) > before
    all_alive(stack)


def test_the_watchdog_fails_a_run_that_stopped_progressing(api, stack, settings, busy_cluster):
    """With the preparer down a run would stay PENDING forever: with a 4 s stall the
    status service's watchdog ends it FAILED, naming the stall and the last stage. A run
    request that never reached Kafka (the gateway died between the two) ends the same."""
    stalled_env = {"CLUSTERFLOW_WATCHDOG_STALL_SECONDS": "4", "CLUSTERFLOW_WATCHDOG_INTERVAL_SECONDS": "1"}
    stack.kill("services.status", signal.SIGTERM)
    stack.env.update(stalled_env)
    stack.spawn("services.status")
    stack.kill("services.preparer", signal.SIGTERM)
    try:
        task = start_run(api, busy_cluster)
        run_id = task["additional_data"]["run_id"]
        # A request the gateway recorded but never published.
        lost_run, lost_task = f"run_lost{run_id[8:]}", f"task_lost{run_id[8:]}"
        execute(settings, text("INSERT INTO run_requests (run_id, task_id, namespace, cluster_id, created_at) "
                             "VALUES (:r, :t, 'e2e', :c, now() - interval '1 hour')"),
              {"r": lost_run, "t": lost_task, "c": busy_cluster})
        assert api.get(f"/v1/tasks/{lost_task}").json()["status"] == "PENDING"

        started = time.monotonic()
        done = wait_for_task(api, task["task_id"], timeout=60, stack=stack)
        assert done["status"] == "FAILED", done
        assert time.monotonic() - started < 30
        assert done["error"].startswith("no progress for ") and done["error"].endswith(" s (last stage queued)"), \
            done["error"]
        lost = wait_for_task(api, lost_task, timeout=30, stack=stack)
        assert lost["status"] == "FAILED" and "no progress for" in lost["error"], lost
        history = query(settings, select(run_events).where(run_events.c.run_id == run_id))
        assert [(e["service"], e["status"]) for e in history if e["service"] == "watchdog"] == [("watchdog", "FAILED")]
    finally:
        stack.kill("services.status", signal.SIGTERM)
        for key in stalled_env:
            stack.env.pop(key, None)
        stack.spawn("services.status")
        stack.spawn("services.preparer")
    # The preparer, back, drops the failed run at once: it stays FAILED, without results.
    wait_consumed(settings, {PREPARER: ["clustering.execution.requested"]}, timeout=120)
    time.sleep(2)
    execution = api.get(f"/v1/clusters/{busy_cluster}/executions/{run_id}").json()
    assert execution["status"] == "failed" and execution["num_points"] == 0
    assert query(settings, select(run_requests.c.run_id).where(run_requests.c.run_id == lost_run))
    all_alive(stack)
