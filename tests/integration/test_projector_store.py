"""The status projector's store on the real PostgreSQL: a run's first events, projected
at once by separate consumers (the projector subscribes to several topics, each its
own consumer), all land: none overwrites what another wrote."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from clusterflow.db import make_engine
from clusterflow.db.schema import executions, tasks
from contracts.api import TaskStatusEnum
from contracts.events import (
    CentroidSummary,
    ClusteringConfig,
    ClusterMetrics,
    ExecutionClustered,
    ExecutionRequested,
    ResultArtifacts,
    RunStatusChanged,
)
from services.status.store import ReadModelStore

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def first_events(run: int, unique: str) -> list:
    ids = dict(namespace="ns", run_id=f"run_{unique}_{run}", cluster_id="clust_1", task_id=f"task_{unique}_{run}")
    return [
        ExecutionRequested(**ids, occurred_at=T0),
        RunStatusChanged(**ids, status=TaskStatusEnum.PROCESSING, service="preparer", stage="preparing",
                         progress=0.05, occurred_at=T0 + timedelta(seconds=1)),
        RunStatusChanged(**ids, status=TaskStatusEnum.PROCESSING, service="clusterer", stage="clustering",
                         progress=0.5, occurred_at=T0 + timedelta(seconds=2)),
        ExecutionClustered(**ids, occurred_at=T0 + timedelta(seconds=3),
                           artifacts=ResultArtifacts(members_key="m", centroids_key="c"), num_clusters=1,
                           num_points=3, metrics=ClusterMetrics(),
                           centroids=[CentroidSummary(group_id="cl_0", num_members=3)],
                           config=ClusteringConfig(clustering_method="kmeans", embedding_name="text")),
    ]


def test_a_runs_first_events_projected_at_once_all_land(settings, unique) -> None:
    runs = 25

    async def scenario():
        # One engine per consumer, as the projector's subscriptions have their own sessions.
        engines = [make_engine(settings.database_url, pool_size=2) for _ in range(4)]
        try:
            stores = [ReadModelStore(e) for e in engines]
            await asyncio.gather(*(stores[i].project(event) for run in range(runs)
                                   for i, event in enumerate(first_events(run, unique))))
            async with engines[0].connect() as conn:
                rows = (await conn.execute(select(executions.c.run_id, executions.c.status, executions.c.inputs)
                                           .where(executions.c.run_id.like(f"run_{unique}_%")))).all()
                task_rows = (await conn.execute(select(tasks.c.status, tasks.c.inputs)
                                                .where(tasks.c.task_id.like(f"task_{unique}_%")))).all()
        finally:
            for e in engines:
                await e.dispose()
        return rows, task_rows

    rows, task_rows = asyncio.run(scenario())
    assert len(rows) == runs and len(task_rows) == runs
    lost = [r.run_id for r in rows if r.status != "COMPLETED" or r.inputs is None]
    assert not lost, f"{len(lost)} of {runs} runs lost an event's update: {lost[:5]}"
    assert all(t.status == "COMPLETED" and t.inputs for t in task_rows)
