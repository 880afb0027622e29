"""Persistence of the read models: one transaction per event, exactly once per event id."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import executions, processed_events, run_events, tasks
from contracts.events import Event, RunStatusChanged
from services.status.projection import apply, new_run, task_row

CONSUMER = "status"
_EXECUTION_COLUMNS = {c.name for c in executions.c} - {"updated_at"}


class ReadModelStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def project(self, event: Event) -> bool:
        """Apply one event; False when it was already applied (a redelivery)."""
        async with self.engine.begin() as conn:
            first_time = await conn.scalar(
                pg_insert(processed_events)
                .values(consumer=CONSUMER, event_id=event.event_id)
                .on_conflict_do_nothing()
                .returning(processed_events.c.event_id)
            )
            if first_time is None:
                return False
            # The row lock orders concurrent events of one run (several topics and
            # partitions). A run's first events find no row to lock: each would start from
            # nothing and the last upsert would overwrite what the others wrote (a task
            # COMPLETED without its inputs). So the run's fresh row goes in first (nothing
            # happens if it exists; a concurrent insert makes this wait for its commit),
            # and every event then reads, under the lock, the row the previous one wrote.
            fresh = {k: v for k, v in new_run(event).items() if k in _EXECUTION_COLUMNS}
            await conn.execute(pg_insert(executions).values(**fresh)
                               .on_conflict_do_nothing(index_elements=[executions.c.run_id]))
            current = (await conn.execute(
                select(executions).where(executions.c.run_id == event.run_id).with_for_update()
            )).mappings().one()
            run = apply(dict(current), event)

            row = {k: v for k, v in run.items() if k in _EXECUTION_COLUMNS}
            stmt = pg_insert(executions).values(**row)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=[executions.c.run_id],
                set_={**{k: stmt.excluded[k] for k in row if k != "run_id"}, "updated_at": func.now()},
            ))
            task = {**task_row(run), "created_at": run["created_at"]}
            stmt = pg_insert(tasks).values(**task)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=[tasks.c.task_id],
                set_={**{k: stmt.excluded[k] for k in task if k not in ("task_id", "created_at")},
                      "updated_at": func.now()},
            ))
            if isinstance(event, RunStatusChanged):
                await conn.execute(pg_insert(run_events).values(
                    event_id=event.event_id, run_id=event.run_id, status=event.status.value,
                    service=event.service, stage=event.stage, progress=event.progress,
                    message=event.message or event.error, occurred_at=event.occurred_at,
                ).on_conflict_do_nothing())
            return True
