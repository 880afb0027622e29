"""Workers ask whether a run was stopped, at each stage boundary: the read model's
status (a cancel or the watchdog's FAILED, once projected) or the gateway's own record
of a cancel request (at once, however far the projector lags behind)."""
from __future__ import annotations

from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import executions, run_requests
from contracts.api import TERMINAL_STATUSES, TaskStatusEnum

_ENDED = {s.value for s in TERMINAL_STATUSES}


class RunCanceled(Exception):
    """Raised by a worker that finds its run canceled: it stops without reporting."""


class RunState(Protocol):
    async def status(self, run_id: str) -> str | None: ...


class PostgresRunState:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def status(self, run_id: str) -> str | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(executions.c.status, run_requests.c.canceled_at)
                .select_from(run_requests.outerjoin(executions, executions.c.run_id == run_requests.c.run_id))
                .where(run_requests.c.run_id == run_id)
            )).first()
            if row is None:  # a run not recorded by a gateway (published on Kafka directly)
                return await conn.scalar(select(executions.c.status).where(executions.c.run_id == run_id))
        if row.canceled_at is not None and row.status not in _ENDED:
            return TaskStatusEnum.CANCELED.value
        return row.status


# A run ended by a request (CANCELED) or by the watchdog (FAILED: no progress for too
# long) is not worked on any more; a late worker drops it at its next stage boundary.
_STOPPED = {TaskStatusEnum.CANCELED.value, TaskStatusEnum.FAILED.value}


async def stop_if_canceled(state: RunState, run_id: str) -> None:
    if await state.status(run_id) in _STOPPED:
        raise RunCanceled(run_id)
