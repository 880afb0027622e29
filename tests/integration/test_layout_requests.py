"""Deferred layouts' request rows on the real PostgreSQL: gateways asking for the same
run's layout at once (each with its own connection pool, as separate processes have)
start exactly one computation; a failed layout is reported, then claimed again once."""
from __future__ import annotations

import asyncio

import pytest

from clusterflow.db import make_engine
from clusterflow.layouts import FAILED, READY, claim_layout, finish_layout

pytestmark = pytest.mark.integration


def test_concurrent_claims_from_separate_pools_start_one_computation(settings, unique) -> None:
    async def scenario():
        engines = [make_engine(settings.database_url, pool_size=2) for _ in range(4)]
        try:
            run_id = f"run_{unique}"
            states = await asyncio.gather(*(claim_layout(e, "ns", run_id) for e in engines for _ in range(3)))
            assert sum(s.claimed for s in states) == 1
            assert {s.status for s in states} == {"computing"}
            await finish_layout(engines[0], run_id, FAILED, "segment gone")
            failed = await claim_layout(engines[1], "ns", run_id)  # reported once, with its error
            assert not failed.claimed and failed.status == FAILED and failed.error == "segment gone"
            retries = await asyncio.gather(*(claim_layout(e, "ns", run_id) for e in engines))
            assert sum(s.claimed for s in retries) == 1  # the next GETs: one retries it
            await finish_layout(engines[2], run_id, READY)
            ready = await claim_layout(engines[3], "ns", run_id)
            assert not ready.claimed and ready.status == READY
        finally:
            for e in engines:
                await e.dispose()

    asyncio.run(scenario())
