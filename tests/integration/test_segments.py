"""Segments and manifests on the real servers (PostgreSQL, SeaweedFS S3).

Documents are written the way the gateway writes them (`GatewayRepository`), runs are
selected the way the preparer selects them (`SegmentStore.select`), and vectors read the
way every reader reads them (`RunVectors` over a `SegmentCache`). A model of what is
live, kept by the test, is the oracle.
"""
from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
from sqlalchemy import select, text

from clusterflow.db import make_engine
from clusterflow.db.schema import document_vectors, executions, segments
from clusterflow.segments import RunVectors, SegmentCache, SegmentUnavailable
from clusterflow.storage import S3ObjectStore
from contracts.api import LogicalOperator
from contracts.resources import DocumentIn
from services.gateway.repository import GatewayRepository
from services.preparer.export import Selection
from services.preparer.segments import SegmentStore

pytestmark = pytest.mark.integration
DIM = 8
EMB = "text"


class World:
    def __init__(self, settings, unique, tmp_path):
        self.engine = make_engine(settings.database_url, pool_size=5)
        self.repo = GatewayRepository(self.engine)
        self.store = S3ObjectStore.from_settings(settings)
        self.store.ensure_bucket()
        self.segments = SegmentStore(self.engine, self.store, max_rows=300)
        self.tmp = tmp_path
        self.namespace = f"seg-{unique}"
        self.live: dict[str, tuple[np.ndarray, str]] = {}  # document -> (vector, colour)
        self.rng = np.random.default_rng(0)
        self.runs = 0

    async def create(self) -> str:
        row = await self.repo.create_collection(self.namespace, {"collection_name": "c", "embeddings": {EMB: DIM}})
        self.collection_id = row["collection_id"]
        return self.collection_id

    async def upsert(self, ids: list[str]) -> None:
        docs = []
        for i in ids:
            vec = self.rng.normal(size=DIM).astype(np.float32)
            colour = random.choice(["red", "blue"])
            docs.append(DocumentIn(document_id=i, payload={"colour": colour}, embeddings={EMB: vec.tolist()}))
        await self.repo.upsert_documents(self.collection_id, docs)
        for d in docs:
            self.live[d.document_id] = (np.asarray(d.embeddings[EMB], dtype=np.float32), d.payload["colour"])

    async def delete(self, ids: list[str]) -> None:
        for i in ids:
            await self.repo.delete_document(self.collection_id, i)
            self.live.pop(i, None)

    def selection(self, colour: str | None = None) -> Selection:
        filters = None if colour is None else LogicalOperator.model_validate(
            {"AND": [{"field": "colour", "operator": "eq", "value": colour}]})
        return Selection(self.namespace, [self.collection_id], EMB, filters)

    async def run(self, colour: str | None = None, limit: int | None = None):
        self.runs += 1
        return await self.segments.select(self.selection(colour), run_id=f"run_{self.namespace}_{self.runs}",
                                          plan=lambda matched: limit, seed=7)

    def read(self, manifest, cache: SegmentCache | None = None):
        cache = cache or SegmentCache(self.store, self.tmp / f"cache{random.random()}", max_bytes=2**30)
        ids, X = RunVectors(manifest, cache).load()
        return dict(zip(ids.to_pylist(), X))

    def expected(self, colour: str | None = None) -> dict[str, np.ndarray]:
        return {i: v for i, (v, c) in self.live.items() if colour is None or c == colour}


@pytest.fixture
async def world(settings, unique, tmp_path):
    w = World(settings, unique, tmp_path)
    await w.create()
    yield w
    w.store.delete_prefix(f"{w.namespace}/")
    await w.engine.dispose()


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want), (len(got), len(want), sorted(set(got) ^ set(want))[:5])
    for i, v in want.items():
        assert np.array_equal(got[i], v), i


async def test_interleaved_upserts_deletes_and_runs_read_exactly_the_live_selection(world):
    random.seed(1)
    await world.upsert([f"d{i}" for i in range(700)])
    first = await world.run()
    assert first.sealed_rows == 700 and len(first.manifest.segments) == 3  # 300 rows a segment
    assert_same(world.read(first.manifest), world.expected())
    for step in range(6):
        existing = sorted(world.live)
        await world.upsert(random.sample(existing, 40) + [f"new{step}_{i}" for i in range(25)])
        await world.delete(random.sample(sorted(world.live), 15))
        if step % 2:
            assert await world.segments.seal_tail(world.collection_id, EMB) > 0
        colour = random.choice([None, "red", "blue"])
        selected = await world.run(colour)
        assert selected.matched == len(world.expected(colour))
        assert_same(world.read(selected.manifest), world.expected(colour))
        assert selected.manifest.selection["filters"] == (None if colour is None else
                                                          world.selection(colour).filters.model_dump(mode="json"))
        assert selected.manifest.selection["dimension"] == DIM
    # A seeded sample: the same seed gives the same documents, all of them live.
    one, two = await world.run(limit=100), await world.run(limit=100)
    sample = world.read(one.manifest)
    assert len(sample) == 100 and set(sample) == set(world.read(two.manifest))
    assert_same(sample, {i: world.expected()[i] for i in sample})
    assert one.manifest.selection["sample"] == {"limit": 100, "seed": 7}


async def test_a_run_taken_while_upserts_commit_sees_each_batch_whole_or_not_at_all(world):
    random.seed(2)
    await world.upsert([f"d{i}" for i in range(400)])
    await world.run()
    before = {i: v.copy() for i, v in world.expected().items()}
    batch = sorted(world.live)[:200] + [f"late{i}" for i in range(50)]
    selected, _ = await asyncio.gather(world.run(), world.upsert(batch))
    got = world.read(selected.manifest)
    # One upsert call is one transaction, the run one snapshot: all of it, or none.
    assert_same(got, world.expected() if "late0" in got else before)


async def test_an_unchanged_collection_is_not_sealed_or_downloaded_again(world):
    await world.upsert([f"d{i}" for i in range(500)])
    cache = SegmentCache(world.store, world.tmp / "shared-cache", max_bytes=2**30)
    first = await world.run()
    world.read(first.manifest, cache)
    downloaded = cache.downloaded_bytes
    assert downloaded > 500 * DIM * 4 and cache.misses == 2
    again = await world.run()
    assert again.sealed_rows == 0 and again.manifest.segments == first.manifest.segments
    assert_same(world.read(again.manifest, cache), world.expected())
    assert cache.downloaded_bytes == downloaded and cache.hits == 2


async def test_compaction_during_a_run_keeps_its_segments_until_it_finishes(world):
    await world.upsert([f"d{i}" for i in range(600)])
    running = await world.run()
    want = world.expected()
    # Most rows superseded or deleted: both segments are mostly dead.
    await world.upsert([f"d{i}" for i in range(0, 600, 2)])
    await world.delete([f"d{i}" for i in range(1, 600, 4)])
    await world.segments.seal_tail(world.collection_id, EMB)
    retired = await world.segments.compact(world.collection_id, EMB, min_live_ratio=0.5)
    assert retired >= 2
    # The run is unfinished (no terminal status): nothing it reads may go.
    assert await world.segments.collect_garbage(retention_s=0) == 0
    assert_same(world.read(running.manifest), want)
    # A run after compaction reads the live rows, from the new segments only.
    after = await world.run()
    assert_same(world.read(after.manifest), world.expected())
    old = {s.key for s in running.manifest.segments}
    assert not old & {s.key for s in after.manifest.segments}
    async with world.engine.begin() as conn:
        states = dict((await conn.execute(select(segments.c.object_key, segments.c.state)
                                          .where(segments.c.object_key.in_(old)))).all())
        assert set(states.values()) == {"retired"}
        await conn.execute(executions.insert(), [
            {"run_id": run_id, "task_id": f"task_{run_id}", "namespace": world.namespace, "cluster_id": "c",
             "status": "COMPLETED"} for (run_id,) in (await conn.execute(text(
                 "SELECT DISTINCT run_id FROM run_segments WHERE run_id LIKE :p"), {"p": f"run_{world.namespace}%"}))])
    # Finished: the retired segments go, and a reader of the old manifest is told which.
    assert await world.segments.collect_garbage(retention_s=0) == len(old)
    with pytest.raises(SegmentUnavailable, match="missing from the object store"):
        world.read(running.manifest)
    assert_same(world.read(after.manifest), world.expected())


async def test_a_lost_segment_is_sealed_again_from_postgres(world):
    await world.upsert([f"d{i}" for i in range(200)])
    first = await world.run()
    (ref,) = first.manifest.segments
    world.store.delete_prefix(ref.key)
    with pytest.raises(SegmentUnavailable, match=ref.key):
        world.read(first.manifest)
    from clusterflow.segments import PostgresSegmentLedger
    await PostgresSegmentLedger(world.engine).mark_lost(ref.key, "test")
    again = await world.run()
    assert again.sealed_rows == 200 and ref.key not in {s.key for s in again.manifest.segments}
    assert_same(world.read(again.manifest), world.expected())


async def test_rows_point_only_at_registered_segments(world):
    await world.upsert([f"d{i}" for i in range(350)])
    await world.segments.seal_tail(world.collection_id, EMB)
    async with world.engine.connect() as conn:
        dangling = await conn.scalar(text(
            "SELECT count(*) FROM document_vectors dv WHERE dv.collection_id = :c AND dv.segment_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.segment_id = dv.segment_id)"), {"c": world.collection_id})
        tail = await conn.scalar(select(document_vectors.c.document_id).where(
            document_vectors.c.collection_id == world.collection_id, document_vectors.c.segment_id.is_(None)))
    assert dangling == 0 and tail is None
