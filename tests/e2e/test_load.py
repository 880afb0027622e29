"""Load: 200 executions submitted within a minute all reach a terminal status, and
while runs wait their tasks tell their place in the queue and the expected wait."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from clusterflow.db.schema import tasks
from tests.e2e.conftest import TERMINAL
from tests.support.corpus import make_cluster, make_collection, start_run
from tests.support.kafka import query

pytestmark = pytest.mark.e2e

RUNS = 200
TIMEOUT_S = 1200  # generous: the whole pipeline on 2 cores


def test_200_executions_in_a_minute_all_finish(api, stack, settings):
    collection_id = make_collection(api, groups=4, per_group=50, dim=8, seed=51)
    cluster_id = make_cluster(api, collection_id, "kmeans", {"n_clusters": 4}, defer_visualization=True)

    started = time.monotonic()
    submitted = []
    for _ in range(RUNS):
        task = start_run(api, cluster_id)
        assert task["status"] == "PENDING" and task["queue_position"] >= 1
        submitted.append(task["task_id"])
    submit_s = time.monotonic() - started
    assert submit_s < 60, f"submitting {RUNS} runs took {submit_s:.1f}s"

    def statuses() -> dict[str, int]:
        rows = query(settings, select(tasks.c.status, func.count().label("n")).where(tasks.c.cluster_id == cluster_id)
                     .group_by(tasks.c.status))
        return {r["status"]: r["n"] for r in rows}

    waiting_checked = 0
    deadline = started + TIMEOUT_S
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = statuses()
        finished = sum(n for s, n in counts.items() if s in TERMINAL)
        if finished == RUNS:
            break
        if counts.get("COMPLETED", 0) >= 1 and waiting_checked < 20:
            # Once a run has completed, a waiting task knows its place and its wait.
            for task_id in reversed(submitted):
                task = api.get(f"/v1/tasks/{task_id}").json()
                if task["status"] in ("PENDING", "QUEUED"):
                    assert task["queue_position"] is not None and task["queue_position"] >= 1, task
                    assert task["estimated_wait_minutes"] is not None and task["estimated_wait_minutes"] >= 0, task
                    waiting_checked += 1
                    break
        time.sleep(2)
    total_s = time.monotonic() - started
    assert sum(n for s, n in counts.items() if s in TERMINAL) == RUNS, \
        f"after {total_s:.0f}s: {counts}\n{stack.log_tails()}"
    assert counts == {"COMPLETED": RUNS}, counts
    assert waiting_checked >= 1, "no waiting task was seen after the first completion"
    # Every submitted task is readable and complete through the API.
    for task_id in submitted[:: RUNS // 20]:
        assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "COMPLETED"
    print(f"load: {RUNS} runs submitted in {submit_s:.1f}s, all COMPLETED after {total_s:.0f}s "
          f"({RUNS / total_s * 60:.0f} runs/min); waiting tasks checked: {waiting_checked}")
