"""Which events a consumer has fully handled, so a redelivery is skipped.

The status projector records this inside its own transaction; the workers (preparer,
clusterer) mark an event only after the artifacts and the output event are durable,
and their outputs are deterministic (same keys, same derived event ids), so a crash
between the two merely repeats identical work.
"""
from __future__ import annotations

from typing import Protocol

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import processed_events


class ProcessedLog(Protocol):
    async def seen(self, consumer: str, event_id: str) -> bool: ...
    async def mark(self, consumer: str, event_id: str) -> None: ...


class PostgresProcessedLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def seen(self, consumer: str, event_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.scalar(select(processed_events.c.event_id).where(
                processed_events.c.consumer == consumer, processed_events.c.event_id == event_id))
        return found is not None

    async def mark(self, consumer: str, event_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(pg_insert(processed_events).values(consumer=consumer, event_id=event_id)
                               .on_conflict_do_nothing())
