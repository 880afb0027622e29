"""Sealing vectors into segments, selecting a run's manifest, compaction.

What it keeps true (the format and the reader are in `clusterflow/segments.py`):
- Postgres says which vector of each document is live: `document_vectors.version`
  changes on every upsert, and the row points at its place in a sealed segment
  (`segment_id`, `segment_row`) or holds the bytes itself (the unsealed tail).
- A segment object is uploaded whole before any row points at it, and registered
  (`segments`) before any manifest names it: a sealer killed mid-segment leaves at most
  an object nobody references.
- A run's manifest is taken from one Postgres snapshot (REPEATABLE READ): the count,
  the tail it seals and the selection itself see the same documents, so its member set
  is exactly what the SQL selection returned at that moment, upserts and deletes that
  commit meanwhile included or excluded as a whole.
- Sealing, selection and compaction of one (collection, embedding) hold a Postgres
  advisory lock, so they never interleave; upserts never wait for them: a row upserted
  while a tail is being sealed keeps its new version in the tail (the pointer update is
  guarded by the version read), and its old copy in the new segment is dead.

How segments come to exist (the decision, measured in `bench/ingest.py`):
- bulk imports write their segments directly, beside the rows they load into Postgres
  (which keeps every live vector's bytes: the source a lost segment is sealed again from);
- REST upserts land in the tail; a sweep in the preparer every `seal_interval_seconds`
  seals a tail of `seal_min_rows` or more at once, and a smaller one once it has stopped
  growing for one interval (a query over a partial index on the tail: well under a
  millisecond when nothing is waiting, so a poll costs less than a change-event topic,
  its consumer and its ordering questions would);
- a run seals whatever tail its collections still have, inside its own snapshot.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter
from sqlalchemy import ARRAY, BigInteger, Integer, String, any_, bindparam, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clusterflow import datasets
from clusterflow.db.schema import collections, document_vectors, segments
from clusterflow.segments import Manifest, SegmentRef, segment_key
from clusterflow.storage import ObjectStore
from contracts.api import TERMINAL_STATUSES
from services.preparer.export import FixedWidthCopy, Selection, compile_query, matching

log = logging.getLogger("clusterflow.preparer.segments")

SEALED_ROWS = Counter("clusterflow_segment_sealed_rows", "Vector rows sealed into segments, by trigger",
                      ["trigger"])
COMPACTED = Counter("clusterflow_segment_compactions", "Segments rewritten or merged by compaction")


@dataclass
class SealedTail:
    """Segments written from one collection's tail, and where each tail row went."""
    refs: list[SegmentRef] = field(default_factory=list)
    places: dict[str, tuple[int, int]] = field(default_factory=dict)  # document_id -> (segment_id, row)
    versions: dict[str, int] = field(default_factory=dict)  # document_id -> the version sealed

    @property
    def rows(self) -> int:
        return len(self.places)


@dataclass
class Selected:
    manifest: Manifest
    matched: int
    sealed_rows: int  # tail rows this selection had to seal first


class SegmentStore:
    def __init__(self, engine: AsyncEngine, store: ObjectStore, *, max_rows: int = 170_000,
                 upload_attempts: int = 5, upload_backoff_s: float = 0.5) -> None:
        self.engine = engine
        self.store = store
        self.max_rows = max_rows
        self.upload_attempts = upload_attempts
        self.upload_backoff_s = upload_backoff_s

    # ------------------------------------------------------------------ locking

    @asynccontextmanager
    async def _locked(self, collection_ids: list[str], embedding_name: str):
        """Session advisory locks on each (collection, embedding), in a fixed order (no
        deadlock between two runs over overlapping collections). On its own connection:
        a REPEATABLE READ snapshot taken after the lock sees what the previous holder did."""
        keys = sorted({f"segments:{c}/{embedding_name}" for c in collection_ids})
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                for key in keys:
                    await conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"), {"k": key})
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock_all()"))

    # ------------------------------------------------------------------ sealing

    async def seal_tail(self, collection_id: str, embedding_name: str, *, trigger: str = "sweep") -> int:
        """Seal the whole tail of one collection's embedding; returns the rows sealed."""
        async with self._locked([collection_id], embedding_name):
            async with self._snapshot() as conn:
                sealed = await self._seal_in_snapshot(conn, collection_id, embedding_name)
            await self._point_to(collection_id, embedding_name, sealed)
        SEALED_ROWS.labels(trigger=trigger).inc(sealed.rows)
        return sealed.rows

    async def tails(self) -> list[tuple[str, str, int, int]]:
        """(collection, embedding, rows, newest version) of every unsealed tail."""
        dv = document_vectors.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(dv.collection_id, dv.embedding_name, func.count(), func.max(dv.version))
                                      .where(dv.segment_id.is_(None)).group_by(dv.collection_id, dv.embedding_name))
            return [tuple(r) for r in rows]

    @asynccontextmanager
    async def _snapshot(self):
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                await conn.execute(text("SELECT 1"))  # takes the snapshot, begins the transaction
                yield conn

    async def _seal_in_snapshot(self, conn: AsyncConnection, collection_id: str, embedding_name: str) -> SealedTail:
        """The tail as of `conn`'s snapshot, written as segments of at most `max_rows`,
        uploaded and registered. Rows keep pointing at the tail until `_point_to`."""
        dv = document_vectors.c
        tail = (dv.collection_id == collection_id, dv.embedding_name == embedding_name, dv.segment_id.is_(None))
        count = await conn.scalar(select(func.count()).where(*tail))
        if not count:
            return SealedTail()
        meta = (await conn.execute(select(collections.c.namespace, collections.c.embeddings[embedding_name]
                                          .astext.cast(Integer)).where(collections.c.collection_id == collection_id))
                ).first()
        if meta is None or meta[1] is None:
            return SealedTail()
        namespace, dimension = meta
        id_width = int(await conn.scalar(select(func.max(func.octet_length(dv.document_id))).where(*tail)) or 1)
        vector_bytes = 4 * dimension
        padded_id = func.convert_to(dv.document_id, "UTF8").op("||")(func.decode(
            func.repeat("00", literal(id_width) - func.octet_length(dv.document_id)), "hex"))
        query = (select(dv.vector, padded_id, dv.version)
                 .where(*tail, func.octet_length(dv.vector) == vector_bytes).order_by(dv.document_id))
        sealed = SealedTail()
        with tempfile.TemporaryDirectory(prefix="sealer-") as tmp:
            parts: list[tuple[pa.Table, np.ndarray]] = []

            def collect(blocks: list[np.ndarray]) -> None:
                vectors, ids, versions = blocks
                parts.append((pa.table([FixedWidthCopy.strings(ids), datasets.vector_array(
                    np.ascontiguousarray(vectors).view("<f4"))], schema=datasets.dataset_schema(dimension)),
                    np.ascontiguousarray(versions).view(">i8").ravel().astype(np.int64)))

            stream = FixedWidthCopy([vector_bytes, id_width, 8], datasets.rows_per_group(dimension), on_rows=collect)
            await _copy_out(conn, query, stream)
            table = pa.concat_tables([t for t, _ in parts]) if parts else None
            versions = np.concatenate([v for _, v in parts]) if parts else np.zeros(0, np.int64)
            parts.clear()
            for start in range(0, len(versions), self.max_rows):
                piece = table.slice(start, self.max_rows)
                ref = await self._write_segment(namespace, collection_id, embedding_name, dimension, piece, tmp)
                ids = piece.column("document_id").to_pylist()
                sealed.refs.append(ref)
                sealed.places.update({i: (ref.segment_id, r) for r, i in enumerate(ids)})
                sealed.versions.update(zip(ids, versions[start:start + len(ids)].tolist()))
        return sealed

    async def _write_segment(self, namespace: str, collection_id: str, embedding_name: str, dimension: int,
                             table: pa.Table, tmp: str) -> SegmentRef:
        """One segment: written, uploaded (retried while S3 is away), then registered."""
        key = segment_key(namespace, collection_id, embedding_name, f"seg-{uuid.uuid4().hex}")
        path = os.path.join(tmp, "segment.parquet")
        await asyncio.to_thread(pq.write_table, table, path, row_group_size=datasets.rows_per_group(dimension),
                                **datasets.WRITE_OPTIONS)
        size = await self._upload(key, path)
        os.unlink(path)
        return await self.register(namespace, collection_id, embedding_name, dimension, key, table.num_rows, size)

    async def _upload(self, key: str, path: str) -> int:
        delay = self.upload_backoff_s
        for attempt in range(1, self.upload_attempts + 1):
            try:
                return await asyncio.to_thread(self.store.upload, key, path)
            except Exception as exc:  # noqa: BLE001 - S3 away: retried, then the caller's retry takes over
                if attempt == self.upload_attempts:
                    raise
                log.warning("segment %s: upload failed (%r), retrying in %.1f s", key, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def register(self, namespace: str, collection_id: str, embedding_name: str, dimension: int,
                       key: str, num_rows: int, num_bytes: int) -> SegmentRef:
        async with self.engine.begin() as conn:
            segment_id = await conn.scalar(segments.insert().values(
                namespace=namespace, collection_id=collection_id, embedding_name=embedding_name,
                dimension=dimension, object_key=key, num_rows=num_rows, num_bytes=num_bytes,
            ).returning(segments.c.segment_id))
        return SegmentRef(int(segment_id), key, num_rows)

    async def _point_to(self, collection_id: str, embedding_name: str, sealed: SealedTail) -> int:
        """Point the sealed rows at their segments, each row whose version is still the one
        sealed (an upsert since keeps its own place in the tail)."""
        if not sealed.rows:
            return 0
        versions = sealed.versions
        ids = list(sealed.places)
        statement = text(
            "UPDATE document_vectors AS dv SET segment_id = v.segment_id, segment_row = v.segment_row "
            "FROM unnest(:ids, :versions, :segment_ids, :rows) AS v(document_id, version, segment_id, segment_row) "
            "WHERE dv.collection_id = :cid AND dv.embedding_name = :emb AND dv.document_id = v.document_id "
            "AND dv.version = v.version"
        ).bindparams(bindparam("ids", type_=ARRAY(String)), bindparam("versions", type_=ARRAY(BigInteger)),
                     bindparam("segment_ids", type_=ARRAY(BigInteger)), bindparam("rows", type_=ARRAY(Integer)))
        async with self.engine.begin() as conn:
            result = await conn.execute(statement, {
                "ids": ids, "versions": [versions[i] for i in ids],
                "segment_ids": [sealed.places[i][0] for i in ids], "rows": [sealed.places[i][1] for i in ids],
                "cid": collection_id, "emb": embedding_name})
        return result.rowcount

    # ---------------------------------------------------------------- selection

    async def select(self, sel: Selection, *, run_id: str, plan: Callable[[int], int | None], seed: int,
                     record: dict[str, Any] | None = None) -> Selected:
        """A run's manifest: in one snapshot, count the selection (`plan` turns the count
        into a sample size, None for all), seal the collections' tails, take the
        selection's (segment, row) pairs and pin the segments to the run."""
        async with self._locked(sel.collection_ids, sel.embedding_name):
            await self._reseal_lost(sel.collection_ids, sel.embedding_name)
            tails: dict[str, SealedTail] = {}
            async with self._snapshot() as conn:
                matched = await conn.scalar(select(func.count()).select_from(matching(sel).subquery())) or 0
                limit = plan(matched) if matched else None
                dimension = await self._dimension(conn, sel)
                for collection_id in sel.collection_ids:
                    tails[collection_id] = await self._seal_in_snapshot(conn, collection_id, sel.embedding_name)
                segment_ids, rows = await self._sealed_pairs(conn, sel, limit, seed)
                if any(t.rows for t in tails.values()):
                    extra_ids, extra_rows = await self._tail_pairs(conn, sel, limit, seed, tails)
                    segment_ids = np.concatenate([segment_ids, extra_ids])
                    rows = np.concatenate([rows, extra_rows])
                known = [ref for t in tails.values() for ref in t.refs]
                used = np.unique(segment_ids).tolist()
                refs = await self._refs(conn, sorted(set(used) - {r.segment_id for r in known}))
                if used:
                    await conn.execute(text(
                        "INSERT INTO run_segments (run_id, segment_id) SELECT :run, unnest(:ids) ON CONFLICT DO NOTHING"
                    ).bindparams(bindparam("ids", type_=ARRAY(BigInteger))), {"run": run_id, "ids": used})
            for collection_id, sealed in tails.items():
                await self._point_to(collection_id, sel.embedding_name, sealed)
        sealed_rows = sum(t.rows for t in tails.values())
        SEALED_ROWS.labels(trigger="run").inc(sealed_rows)
        selection = {**(record or {}), "collection_ids": sel.collection_ids, "embedding_name": sel.embedding_name,
                     "filters": sel.filters.model_dump(mode="json") if sel.filters is not None else None,
                     "matched": matched, "sample": {"limit": limit, "seed": seed} if limit is not None else None,
                     "live_versions_only": True, "dimension": dimension, "sealed_at_run": sealed_rows}
        manifest = Manifest.build(dimension, refs + known, segment_ids, rows, selection)
        return Selected(manifest=manifest, matched=matched, sealed_rows=sealed_rows)

    async def _reseal_lost(self, collection_ids: list[str], embedding_name: str) -> int:
        """Rows of segments a reader reported lost go back to the tail (their bytes are
        in Postgres), so this selection seals them again; the lost segments retire."""
        async with self.engine.begin() as conn:
            lost = (await conn.execute(
                select(segments.c.segment_id).where(
                    segments.c.collection_id == any_(literal(collection_ids, ARRAY(String))),
                    segments.c.embedding_name == embedding_name, segments.c.state == "lost"))).scalars().all()
            if not lost:
                return 0
            ids = literal(list(lost), ARRAY(BigInteger))
            moved = await conn.execute(document_vectors.update().where(document_vectors.c.segment_id == any_(ids))
                                       .values(segment_id=None, segment_row=None))
            await conn.execute(segments.update().where(segments.c.segment_id == any_(ids))
                               .values(state="retired", retired_at=func.now()))
        log.warning("segments %s were lost: their %d rows are sealed again", list(lost), moved.rowcount)
        return moved.rowcount

    async def _dimension(self, conn: AsyncConnection, sel: Selection) -> int:
        declared = (await conn.execute(
            select(collections.c.embeddings[sel.embedding_name].astext.cast(Integer)).where(
                collections.c.collection_id == any_(literal(sel.collection_ids, ARRAY(String))))
        )).scalars().all()
        dims = {d for d in declared if d is not None}
        if len(dims) != 1:
            raise ValueError(f"embedding {sel.embedding_name!r} has no single dimension across the "
                             f"collections (declared: {sorted(dims)})")
        return dims.pop()

    @staticmethod
    def _sample(query, limit: int | None, seed: int):
        if limit is None:
            return query
        dv = document_vectors.c
        order = func.md5(func.concat(dv.collection_id, "/", dv.document_id, "/", literal(seed)))
        return query.order_by(order).limit(limit)

    async def _sealed_pairs(self, conn: AsyncConnection, sel: Selection, limit: int | None, seed: int
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(segment id, row) of every selected row that is sealed, by binary COPY: 22 bytes
        a row decoded by numpy, no Python object per row."""
        dv = document_vectors.c
        chosen = self._sample(matching(sel, dv.segment_id, dv.segment_row), limit, seed).subquery()
        query = select(chosen.c.segment_id, chosen.c.segment_row).where(chosen.c.segment_id.is_not(None))
        parts: list[tuple[np.ndarray, np.ndarray]] = []

        def collect(blocks: list[np.ndarray]) -> None:
            sid, row = blocks
            parts.append((np.ascontiguousarray(sid).view(">i8").ravel().astype(np.int64),
                          np.ascontiguousarray(row).view(">i4").ravel().astype(np.int32)))

        await _copy_out(conn, query, FixedWidthCopy([8, 4], 1 << 20, on_rows=collect))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    async def _tail_pairs(self, conn: AsyncConnection, sel: Selection, limit: int | None, seed: int,
                          tails: dict[str, SealedTail]) -> tuple[np.ndarray, np.ndarray]:
        """(segment id, row) of the selected rows that were in the tail when the snapshot
        was taken: where this selection's own sealing put them."""
        dv = document_vectors.c
        chosen = self._sample(matching(sel, dv.collection_id, dv.document_id, dv.segment_id), limit,
                              seed).subquery()
        rows = (await conn.execute(select(chosen.c.collection_id, chosen.c.document_id)
                                   .where(chosen.c.segment_id.is_(None)))).all()
        places = [tails[c].places.get(d) for c, d in rows if c in tails]
        places = [p for p in places if p is not None]  # a malformed vector is never sealed, nor read
        return (np.asarray([p[0] for p in places], dtype=np.int64), np.asarray([p[1] for p in places], dtype=np.int32))

    async def _refs(self, conn: AsyncConnection, segment_ids: list[int]) -> list[SegmentRef]:
        if not segment_ids:
            return []
        rows = await conn.execute(select(segments.c.segment_id, segments.c.object_key, segments.c.num_rows)
                                  .where(segments.c.segment_id == any_(literal(segment_ids, ARRAY(BigInteger)))))
        return [SegmentRef(int(s), k, int(n)) for s, k, n in rows]

    # --------------------------------------------------------------- compaction

    async def compact(self, collection_id: str, embedding_name: str, *, min_live_ratio: float = 0.5) -> int:
        """Rewrite the segments whose live share is below `min_live_ratio`, and merge the
        small ones, into new segments of live rows only; the old ones are retired (their
        objects deleted later by `collect_garbage`). Returns the segments retired."""
        async with self._locked([collection_id], embedding_name):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT s.segment_id, s.object_key, s.num_rows, s.dimension, s.namespace, "
                    "(SELECT count(*) FROM document_vectors dv WHERE dv.segment_id = s.segment_id) AS live "
                    "FROM segments s WHERE s.collection_id = :cid AND s.embedding_name = :emb AND s.state = 'active' "
                    "ORDER BY s.segment_id"), {"cid": collection_id, "emb": embedding_name})).all()
            small = [r for r in rows if r.live and r.live < self.max_rows // 4 and r.live >= r.num_rows * min_live_ratio]
            chosen = [r for r in rows if r.live < r.num_rows * min_live_ratio] + (small if len(small) >= 2 else [])
            if not chosen:
                return 0
            dimension, namespace = chosen[0].dimension, chosen[0].namespace
            moves: list[tuple[int, int, int, int]] = []  # (old segment, old row, new segment, new row)
            with tempfile.TemporaryDirectory(prefix="compact-") as tmp:
                tables = []
                for r in chosen:
                    if not r.live:
                        continue
                    async with self.engine.connect() as conn:
                        live = np.asarray((await conn.execute(text(
                            "SELECT segment_row FROM document_vectors WHERE segment_id = :s ORDER BY segment_row"),
                            {"s": r.segment_id})).scalars().all(), dtype=np.int64)
                    path = os.path.join(tmp, f"{r.segment_id}.parquet")
                    await asyncio.to_thread(self.store.download, r.object_key, path)
                    table = (await asyncio.to_thread(pq.read_table, path)).take(pa.array(live))
                    os.unlink(path)
                    tables.append((r.segment_id, live, table))
                merged = pa.concat_tables([t for _, _, t in tables]) if tables else None
                origin = [(sid, int(row)) for sid, live, _ in tables for row in live]
                for start in range(0, len(origin), self.max_rows):
                    piece = merged.slice(start, self.max_rows)
                    ref = await self._write_segment(namespace, collection_id, embedding_name, dimension, piece, tmp)
                    moves.extend((sid, row, ref.segment_id, i)
                                 for i, (sid, row) in enumerate(origin[start:start + piece.num_rows]))
            old = [r.segment_id for r in chosen]
            async with self.engine.begin() as conn:
                if moves:
                    # Only rows that still point at the old place move (an upsert since
                    # put its row back in the tail).
                    await conn.execute(text(
                        "UPDATE document_vectors AS dv SET segment_id = v.new_segment, segment_row = v.new_row "
                        "FROM unnest(:old_segment, :old_row, :new_segment, :new_row) "
                        "AS v(old_segment, old_row, new_segment, new_row) "
                        "WHERE dv.segment_id = v.old_segment AND dv.segment_row = v.old_row"
                    ).bindparams(*(bindparam(n, type_=ARRAY(BigInteger if "segment" in n else Integer))
                                   for n in ("old_segment", "old_row", "new_segment", "new_row"))),
                        {"old_segment": [m[0] for m in moves], "old_row": [m[1] for m in moves],
                         "new_segment": [m[2] for m in moves], "new_row": [m[3] for m in moves]})
                await conn.execute(segments.update().where(segments.c.segment_id == any_(literal(old, ARRAY(BigInteger))))
                                   .values(state="retired", retired_at=func.now()))
        COMPACTED.inc(len(old))
        log.info("compacted %s/%s: %d segments retired, %d live rows rewritten", collection_id, embedding_name,
                 len(old), len(moves))
        return len(old)

    async def collect_garbage(self, *, retention_s: float) -> int:
        """Delete the objects of retired segments that no unfinished run pins and that
        were retired more than `retention_s` ago; returns how many went."""
        terminal = [s.value for s in TERMINAL_STATUSES]
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT s.segment_id, s.object_key FROM segments s WHERE s.state = 'retired' "
                "AND s.retired_at <= now() - make_interval(secs => :keep) "
                # rows another collection copied (enrichment) may still point at it
                "AND NOT EXISTS (SELECT 1 FROM document_vectors dv WHERE dv.segment_id = s.segment_id) "
                "AND NOT EXISTS (SELECT 1 FROM run_segments rs LEFT JOIN executions e ON e.run_id = rs.run_id "
                "                WHERE rs.segment_id = s.segment_id "
                "                AND (e.status IS NULL OR NOT (e.status = ANY(:terminal))))"
            ).bindparams(bindparam("terminal", type_=ARRAY(String))), {"keep": retention_s, "terminal": terminal})).all()
        deleted = 0
        for segment_id, key in rows:
            await asyncio.to_thread(self.store.delete_prefix, key)
            async with self.engine.begin() as conn:
                await conn.execute(text("DELETE FROM run_segments WHERE segment_id = :s"), {"s": segment_id})
                await conn.execute(segments.delete().where(segments.c.segment_id == segment_id))
            deleted += 1
        return deleted

    async def compaction_candidates(self) -> list[tuple[str, str]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(segments.c.collection_id, segments.c.embedding_name)
                                      .where(segments.c.state == "active").distinct())
            return [tuple(r) for r in rows]


async def _copy_out(conn: AsyncConnection, query, stream: FixedWidthCopy) -> None:
    sql, params = compile_query(query)
    raw = await conn.get_raw_connection()
    try:
        await raw.driver_connection.copy_from_query(sql, *params, output=stream.feed, format="binary")
        await stream.finish()
    finally:
        await stream.drain()


@dataclass
class Sealer:
    """The preparer's background sweep: seals tails (see the module docstring for the
    rule), compacts, and collects retired segments."""

    segments: SegmentStore
    interval_s: float
    min_rows: int
    compaction_every_s: float
    min_live_ratio: float
    retention_s: float
    _last_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    _last_compaction: float = field(default_factory=time.monotonic)

    async def sweep_once(self) -> int:
        sealed = 0
        for collection_id, embedding_name, rows, newest in await self.segments.tails():
            key = (collection_id, embedding_name)
            if rows >= self.min_rows or self._last_seen.get(key) == newest:
                sealed += await self.segments.seal_tail(collection_id, embedding_name)
                self._last_seen.pop(key, None)
            else:
                self._last_seen[key] = newest
        if time.monotonic() - self._last_compaction >= self.compaction_every_s:
            self._last_compaction = time.monotonic()
            for collection_id, embedding_name in await self.segments.compaction_candidates():
                await self.segments.compact(collection_id, embedding_name, min_live_ratio=self.min_live_ratio)
            await self.segments.collect_garbage(retention_s=self.retention_s)
        return sealed

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next one
                log.exception("sealing sweep failed; trying again in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)
