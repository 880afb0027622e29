"""Deferred layouts' request rows (`layout_requests`), shared by the gateway, which
claims a run's layout before sending the `ComputeLayout` command, and the clusterer,
which records the outcome.

One row per run, claimed by a single atomic INSERT ... ON CONFLICT in Postgres: of any
number of gateway replicas asked for the same layout at once, exactly one gets the
claim and sends the command; the others answer "being computed" (a lock inside one
process, as before, held only within that process). A failed layout may be claimed
again: the GET after the one that reported the failure retries it.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import layout_requests

COMPUTING, READY, FAILED, RETRY = "computing", "ready", "failed", "retry"


@dataclass(frozen=True)
class LayoutState:
    claimed: bool  # this caller must send the command
    status: str
    error: str | None = None


async def claim_layout(engine: AsyncEngine, namespace: str, run_id: str) -> LayoutState:
    """Claim the run's layout. A new row is claimed by the one INSERT that creates it;
    a failed one is reported once with its error (not claimed) and marked `retry`, and
    the next call claims it (row-locked, so again by one caller only)."""
    async with engine.begin() as conn:
        inserted = await conn.execute(
            insert(layout_requests).values(run_id=run_id, namespace=namespace, status=COMPUTING)
            .on_conflict_do_nothing(index_elements=[layout_requests.c.run_id]).returning(layout_requests.c.run_id))
        if inserted.first() is not None:
            return LayoutState(True, COMPUTING)
        row = (await conn.execute(select(layout_requests.c.status, layout_requests.c.error)
                                  .where(layout_requests.c.run_id == run_id).with_for_update())).first()
        if row is None or row.status in (COMPUTING, READY):
            return LayoutState(False, row.status if row else COMPUTING)
        claimed = row.status == RETRY
        await conn.execute(layout_requests.update().where(layout_requests.c.run_id == run_id).values(
            status=COMPUTING if claimed else RETRY, updated_at=func.now(),
            **({"error": None} if claimed else {})))
        return LayoutState(True, COMPUTING) if claimed else LayoutState(False, FAILED, row.error)


async def finish_layout(engine: AsyncEngine, run_id: str, status: str, error: str | None = None) -> None:
    async with engine.begin() as conn:
        await conn.execute(layout_requests.update().where(layout_requests.c.run_id == run_id)
                           .values(status=status, error=error, updated_at=func.now()))
