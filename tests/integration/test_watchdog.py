"""The watchdog's choice of stalled runs, on the real PostgreSQL: idle running runs and
lost run requests are failed; runs waiting their turn only when the whole queue stopped."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, insert, text

from clusterflow.db import make_engine
from clusterflow.db.schema import executions, run_requests
from contracts.api import TaskStatusEnum
from contracts.events import RunStatusChanged, derived_event_id
from services.status.watchdog import Watchdog, interval_for

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.events: list[RunStatusChanged] = []

    async def publish(self, topic, event, key=None) -> None:
        self.events.append(event)


def row(run_id: str, status: str, idle_s: float, stage: str | None = None) -> dict:
    return {"run_id": run_id, "task_id": "task" + run_id[3:], "namespace": "wd", "cluster_id": "clust_wd",
            "status": status, "stage": stage, "progress": 0.0, "idle": idle_s}


async def put(engine, *rows: dict) -> None:
    async with engine.begin() as conn:
        for r in rows:
            idle = r.pop("idle")
            await conn.execute(insert(executions).values(**r))
            await conn.execute(text("UPDATE executions SET updated_at = now() - make_interval(secs => :s) "
                                    "WHERE run_id = :r"), {"s": idle, "r": r["run_id"]})


async def test_which_runs_the_watchdog_fails(settings):
    engine = make_engine(settings.database_url)
    tag = uuid.uuid4().hex[:8]
    ids = {k: f"run_{k}_{tag}" for k in ("running", "queued", "fresh", "done", "mover", "lost")}
    try:
        await put(engine,
                  row(ids["running"], "PROCESSING", 3600, stage="clustering"),
                  row(ids["queued"], "PENDING", 3600, stage="queued"),
                  row(ids["fresh"], "PROCESSING", 5, stage="layout"),
                  row(ids["done"], "COMPLETED", 3600, stage="completed"),
                  row(ids["mover"], "PROCESSING", 1, stage="metrics"))
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO run_requests (run_id, task_id, namespace, cluster_id, created_at) "
                                    "VALUES (:r, :t, 'wd', 'clust_wd', now() - interval '2 hours')"),
                               {"r": ids["lost"], "t": f"task_lost_{tag}"})
        out = Recorder()
        dog = Watchdog(engine, out, stall_seconds=600)

        # The queue moves (a run had an event a second ago): the waiting run is left alone.
        assert await dog.sweep() >= 2
        failed = {e.run_id: e for e in out.events if e.run_id.endswith(tag)}
        assert set(failed) == {ids["running"], ids["lost"]}
        event = failed[ids["running"]]
        assert event.status is TaskStatusEnum.FAILED and event.service == "watchdog"
        assert event.error.startswith("no progress for 36") and event.error.endswith(" s (last stage clustering)")
        assert event.event_id == derived_event_id(ids["running"], "watchdog", "failed", "FAILED")
        assert (event.namespace, event.cluster_id, event.task_id) == ("wd", "clust_wd", f"task_running_{tag}")
        assert failed[ids["lost"]].error.endswith("(last stage queued)")

        # Nothing has moved for longer than the stall: the waiting run is stalled too.
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE executions SET updated_at = now() - interval '1 hour' "
                                    "WHERE updated_at > now() - interval '10 minutes'"))
        out.events.clear()
        await dog.sweep()
        failed = {e.run_id for e in out.events if e.run_id.endswith(tag)}
        assert failed == {ids["running"], ids["queued"], ids["fresh"], ids["mover"], ids["lost"]}
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(executions).where(executions.c.run_id.in_(list(ids.values()))))
            await conn.execute(delete(run_requests).where(run_requests.c.run_id == ids["lost"]))
        await engine.dispose()


def test_the_check_interval_follows_the_stall():
    assert interval_for(1800) == 60 and interval_for(4) == 1 and interval_for(100) == 10
    assert interval_for(1800, 5) == 5
