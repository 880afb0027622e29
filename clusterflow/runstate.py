"""Workers ask the read model whether a run was canceled, at each stage boundary."""
from __future__ import annotations

from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import executions
from contracts.api import TaskStatusEnum


class RunCanceled(Exception):
    """Raised by a worker that finds its run canceled: it stops without reporting."""


class RunState(Protocol):
    async def status(self, run_id: str) -> str | None: ...


class PostgresRunState:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def status(self, run_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.scalar(select(executions.c.status).where(executions.c.run_id == run_id))


# A run ended by a request (CANCELED) or by the watchdog (FAILED: no progress for too
# long) is not worked on any more; a late worker drops it at its next stage boundary.
_STOPPED = {TaskStatusEnum.CANCELED.value, TaskStatusEnum.FAILED.value}


async def stop_if_canceled(state: RunState, run_id: str) -> None:
    if await state.status(run_id) in _STOPPED:
        raise RunCanceled(run_id)
