"""The watchdog: no run stays PENDING or PROCESSING forever.

Every `interval` seconds it looks for runs that are not finished and whose read model
has not moved (no event projected) for `stall_seconds` (a run still waiting its turn,
PENDING or QUEUED, only when no run at all has moved for that long: a long queue that
moves is not a fault), and for accepted run requests that never reached the projector
at all, and ends each FAILED with the reason
"no progress for N s (last stage X)". It does not write the read model itself: it
publishes a `RunStatusChanged` FAILED from service "watchdog" on the status topic, and
the projector applies it like any other report, so the projector stays the only
writer. The event id is derived from the run, so two sweeps (or two status replicas)
that catch the same run fail it once. A run that reports again after that stays
FAILED (terminal statuses are final), and the workers drop it at their next stage
boundary (`clusterflow.runstate.stop_if_canceled`).

The stall must be longer than any silence of a legitimate run: every stage reports when
it starts, and the long ones (export, upload, clustering, metrics, layout, assignment,
a composite run's members, labeling) beat every `heartbeat_seconds` (30) while they run
(`clusterflow.messaging.heartbeat`), so the default stall, 600 s, is about twenty
missed beats.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, exists, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import executions, run_requests
from clusterflow.messaging import Publisher
from contracts.api import TERMINAL_STATUSES, TaskStatusEnum
from contracts.events import RunStatusChanged, derived_event_id
from contracts.topics import STATUS_CHANGED

log = logging.getLogger("clusterflow.watchdog")
SERVICE = "watchdog"
BATCH = 500


@dataclass
class StalledRun:
    namespace: str
    run_id: str
    cluster_id: str
    task_id: str
    stage: str | None
    idle_seconds: float


def interval_for(stall_seconds: float, configured: float = 0.0) -> float:
    return configured if configured > 0 else min(60.0, max(1.0, stall_seconds / 10))


@dataclass
class Watchdog:
    engine: AsyncEngine
    publisher: Publisher
    stall_seconds: float
    interval_seconds: float = 0.0

    async def stalled(self) -> list[StalledRun]:
        active = [s.value for s in TaskStatusEnum if s not in TERMINAL_STATUSES]
        waiting = [TaskStatusEnum.PENDING.value, TaskStatusEnum.QUEUED.value]
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.stall_seconds)
        idle = func.extract("epoch", func.now() - executions.c.updated_at)
        unseen_idle = func.extract("epoch", func.now() - run_requests.c.created_at)
        async with self.engine.connect() as conn:
            # A run still waiting its turn is not stalled while the queue moves (some run
            # had an event within the stall): a long queue is not a fault; a dead preparer is.
            moving = exists(select(executions.c.run_id).where(executions.c.updated_at >= cutoff))
            runs = (await conn.execute(
                select(executions.c.namespace, executions.c.run_id, executions.c.cluster_id, executions.c.task_id,
                       executions.c.stage, idle.label("idle"))
                .where(executions.c.status.in_(active), executions.c.updated_at < cutoff,
                       or_(executions.c.status.not_in(waiting), not_(moving)))
                .order_by(executions.c.updated_at).limit(BATCH)
            )).all()
            # Accepted by the gateway, never projected (its ExecutionRequested was lost).
            unseen = (await conn.execute(
                select(run_requests.c.namespace, run_requests.c.run_id, run_requests.c.cluster_id,
                       run_requests.c.task_id, unseen_idle.label("idle"))
                .select_from(run_requests.outerjoin(executions, executions.c.run_id == run_requests.c.run_id))
                .where(and_(executions.c.run_id.is_(None), run_requests.c.created_at < cutoff))
                .limit(BATCH)
            )).all()
        found = [StalledRun(r.namespace, r.run_id, r.cluster_id, r.task_id, r.stage, float(r.idle)) for r in runs]
        found += [StalledRun(r.namespace, r.run_id, r.cluster_id, r.task_id, None, float(r.idle)) for r in unseen]
        return found

    async def sweep(self) -> int:
        """Fail every stalled run once; returns how many were reported."""
        runs = await self.stalled()
        for run in runs:
            stage = run.stage or "queued"
            reason = f"no progress for {int(run.idle_seconds)} s (last stage {stage})"
            log.warning("watchdog: run %s (%s): %s", run.run_id, run.namespace, reason)
            await self.publisher.publish(STATUS_CHANGED, RunStatusChanged(
                event_id=derived_event_id(run.run_id, SERVICE, "failed", TaskStatusEnum.FAILED.value),
                namespace=run.namespace, run_id=run.run_id, cluster_id=run.cluster_id, task_id=run.task_id,
                status=TaskStatusEnum.FAILED, service=SERVICE, stage="failed", message=reason, error=reason,
                details={"stalled": {"last_stage": stage, "idle_seconds": int(run.idle_seconds),
                                     "detected_at": datetime.now(timezone.utc).isoformat()}},
            ))
        return len(runs)

    async def run_forever(self) -> None:
        every = interval_for(self.stall_seconds, self.interval_seconds)
        log.info("watchdog: runs idle for %.0f s are failed; checking every %.1f s", self.stall_seconds, every)
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Postgres or Kafka away: try again next time
                log.exception("watchdog: sweep failed; retrying in %.1f s", every)
