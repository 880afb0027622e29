"""ImportRequested -> documents in Postgres, their vectors in new segments -> a task result.

One pass over the file, row group by row group (memory holds one group, whatever the
file's size): each group's rows are checked (`clusterflow/imports.py`), the good ones
appended to the segment being written for each embedding (sealed and uploaded every
`max_rows`) and copied into staging tables; at the end one statement per table moves
them into `documents` and `document_vectors`, pointing at their segments, and
registers the segments, all in the one transaction the staging tables live in. So an
import lands whole or not at all: a Postgres restart mid-import rolls it back, the
consumer's retry imports again from the start (the segments of the failed attempt are
never registered, so no manifest can name them), and nothing stored before is touched
until the commit. The task's result lists the refused rows by row number.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow import datasets
from clusterflow.db.schema import collections
from clusterflow.idempotency import ProcessedLog
from clusterflow.imports import MAX_REPORTED_BAD_ROWS, BadRow, ImportFileError, check_batch, duplicated_rows, plan_columns
from clusterflow.messaging import Publisher, RunFailed, heartbeat, report_status
from clusterflow.observability import Stopwatch
from clusterflow.segments import segment_key
from clusterflow.storage import ObjectStore
from contracts.api import TaskStatusEnum
from contracts.events import ImportRequested
from contracts.resources import ImportBadRow, ImportResult

SERVICE = "preparer"
log = logging.getLogger("clusterflow.preparer.import")
BATCH_ROWS = 50_000


@dataclass
class _SegmentWriter:
    """The segment being written for one embedding."""

    embedding_name: str
    dimension: int
    path: str
    writer: pq.ParquetWriter | None = None
    rows: int = 0
    ordinal: int = -1


@dataclass
class Importer:
    engine: AsyncEngine
    store: ObjectStore
    publisher: Publisher
    processed: ProcessedLog
    max_rows: int = 170_000
    heartbeat_s: float = 2.0

    async def handle(self, event: ImportRequested) -> None:
        if await self.processed.seen(SERVICE, event.event_id):
            return
        await report_status(self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING,
                            stage="importing", progress=0.01, message="reading the file")
        async with self.engine.connect() as conn:
            found = (await conn.execute(select(collections.c.namespace, collections.c.embeddings)
                                        .where(collections.c.collection_id == event.collection_id))).first()
        if found is None or found[0] != event.namespace:
            raise RunFailed(f"collection {event.collection_id} does not exist in namespace {event.namespace!r}")
        embeddings = {k: int(v) for k, v in found[1].items()}
        timings = Stopwatch()
        with tempfile.TemporaryDirectory(prefix="import-") as tmp:
            path = os.path.join(tmp, "source.parquet")
            try:
                await asyncio.to_thread(self.store.download, event.source_key, path)
            except Exception as exc:  # noqa: BLE001 - a missing key is the caller's, S3 away is retried
                if getattr(exc, "code", None) in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    raise RunFailed(f"the file {event.source_key} is not in the bucket") from exc
                raise
            timings.lap("download")
            async with heartbeat(self.publisher, event, service=SERVICE, stage="importing", start=0.02, end=0.95,
                                 every_s=self.heartbeat_s) as done:
                result = await self._import(event, embeddings, path, tmp, done)
            timings.lap("import")
        if event.staged:
            await asyncio.to_thread(self.store.delete_prefix, event.source_key)
        result = result.model_copy(update={"seconds": round(sum(timings.laps.values()), 3)})
        log.info("import %s into %s: %d of %d rows, %d refused, %d segments (%s)", event.run_id,
                 event.collection_id, result.imported, result.rows, result.bad_row_count, result.segments, timings)
        status = TaskStatusEnum.COMPLETED_WITH_ERRORS if result.bad_row_count else TaskStatusEnum.COMPLETED
        await report_status(
            self.publisher, event, service=SERVICE, status=status, stage="completed", progress=1.0,
            message=f"{result.imported} of {result.rows} documents imported"
            + (f", {result.bad_row_count} refused (see additional_data.import.bad_rows)" if result.bad_row_count else ""),
            details={"import": result.model_dump(mode="json")})
        await self.processed.mark(SERVICE, event.event_id)

    async def _import(self, event: ImportRequested, embeddings: dict[str, int], path: str, tmp: str,
                      done) -> ImportResult:
        try:
            source = pq.ParquetFile(path)
            plan = plan_columns(source.schema_arrow, embeddings, id_column=event.id_column,
                                embedding_columns=event.embedding_columns or None,
                                payload_columns=event.payload_columns)
            duplicated = await asyncio.to_thread(
                lambda: duplicated_rows(pq.read_table(path, columns=[plan.id_column]).column(0)))
        except ImportFileError as exc:
            raise RunFailed(f"the file cannot be imported: {exc}") from exc
        except (pa.ArrowInvalid, OSError) as exc:
            raise RunFailed(f"the file is not a readable parquet file: {exc}") from exc
        total = max(source.metadata.num_rows, 1)
        writers = {name: _SegmentWriter(name, embeddings[name], os.path.join(tmp, f"segment-{i}.parquet"))
                   for i, name in enumerate(plan.embedding_columns)}
        sealed: list[tuple[int, str, str, int, int, int]] = []  # ordinal, embedding, key, dim, rows, bytes
        ordinals = itertools.count()
        bad: list[BadRow] = []
        bad_count = imported = row = 0
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "CREATE TEMP TABLE import_documents (document_id text, payload jsonb) ON COMMIT DROP"))
            await conn.execute(text(
                "CREATE TEMP TABLE import_vectors (document_id text, embedding_name text, vector bytea, "
                "segment_ordinal int, segment_row int) ON COMMIT DROP"))
            raw = (await conn.get_raw_connection()).driver_connection
            for batch in source.iter_batches(batch_size=BATCH_ROWS):
                checked = await asyncio.to_thread(check_batch, batch, plan, embeddings, row, duplicated)
                row += batch.num_rows
                bad_count += len(checked.bad)
                bad.extend(checked.bad[:max(0, MAX_REPORTED_BAD_ROWS - len(bad))])
                if checked.ids:
                    await raw.copy_records_to_table("import_documents", records=zip(checked.ids, checked.payloads),
                                                    columns=["document_id", "payload"])
                    for name, X in checked.vectors.items():
                        places = await self._append(writers[name], event, checked.ids, X, sealed, ordinals)
                        await raw.copy_records_to_table(
                            "import_vectors", columns=["document_id", "embedding_name", "vector", "segment_ordinal",
                                                       "segment_row"],
                            records=((i, name, X[k].tobytes(), o, r) for k, (i, (o, r)) in
                                     enumerate(zip(checked.ids, places))))
                    imported += len(checked.ids)
                done(row / total)
            for w in writers.values():
                await self._seal(w, event, sealed)
            await self._apply(conn, event, sealed)
        return ImportResult(rows=row, imported=imported, bad_row_count=bad_count,
                            bad_rows=[ImportBadRow(row=b.row, document_id=b.document_id, reason=b.reason) for b in bad],
                            segments=len(sealed), seconds=0.0)

    async def _append(self, w: _SegmentWriter, event: ImportRequested, ids: list[str], X: np.ndarray,
                      sealed: list, ordinals: Iterator[int]) -> list[tuple[int, int]]:
        """Append rows to the embedding's segment (sealing it each `max_rows`); returns
        each row's (segment ordinal, row)."""
        places: list[tuple[int, int]] = []
        at = 0
        while at < len(ids):
            if w.writer is None:
                w.writer = pq.ParquetWriter(w.path, datasets.dataset_schema(w.dimension), **datasets.WRITE_OPTIONS)
                w.ordinal, w.rows = next(ordinals), 0
            take = min(len(ids) - at, self.max_rows - w.rows)
            table = datasets.dataset_table(ids[at:at + take], X[at:at + take])
            await asyncio.to_thread(w.writer.write_table, table, datasets.rows_per_group(w.dimension))
            places.extend((w.ordinal, w.rows + k) for k in range(take))
            w.rows += take
            at += take
            if w.rows >= self.max_rows:
                await self._seal(w, event, sealed)
        return places

    async def _seal(self, w: _SegmentWriter, event: ImportRequested, sealed: list) -> None:
        """Close and upload the embedding's current segment (registered at commit)."""
        if w.writer is None:
            return
        w.writer.close()
        w.writer = None
        key = segment_key(event.namespace, event.collection_id, w.embedding_name, f"imp-{uuid.uuid4().hex}")
        size = await asyncio.to_thread(self.store.upload, key, w.path)
        os.unlink(w.path)
        sealed.append((w.ordinal, w.embedding_name, key, w.dimension, w.rows, size))

    async def _apply(self, conn, event: ImportRequested, sealed: list) -> None:
        """Staging -> the tables, in the import's transaction; its segments registered."""
        ordinals, segment_ids = [], []
        for ordinal, name, key, dim, rows, size in sealed:
            segment_id = await conn.scalar(text(
                "INSERT INTO segments (namespace, collection_id, embedding_name, dimension, object_key, num_rows, "
                "num_bytes) VALUES (:ns, :cid, :emb, :dim, :key, :rows, :size) RETURNING segment_id"),
                {"ns": event.namespace, "cid": event.collection_id, "emb": name, "dim": dim, "key": key,
                 "rows": rows, "size": size})
            ordinals.append(ordinal)
            segment_ids.append(int(segment_id))
        params: dict[str, Any] = {"cid": event.collection_id}
        await conn.execute(text(
            "INSERT INTO documents (collection_id, document_id, payload) "
            "SELECT :cid, document_id, payload FROM import_documents "
            "ON CONFLICT (collection_id, document_id) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now()"),
            params)
        await conn.execute(text(
            "CREATE TEMP TABLE import_segments (ordinal int, segment_id bigint) ON COMMIT DROP"))
        if ordinals:
            await conn.execute(text("INSERT INTO import_segments SELECT unnest(CAST(:o AS int[])), "
                                    "unnest(CAST(:s AS bigint[]))"), {"o": ordinals, "s": segment_ids})
        await conn.execute(text(
            "INSERT INTO document_vectors (collection_id, document_id, embedding_name, vector, segment_id, segment_row) "
            "SELECT :cid, v.document_id, v.embedding_name, v.vector, m.segment_id, v.segment_row "
            "FROM import_vectors v JOIN import_segments m ON m.ordinal = v.segment_ordinal "
            "ON CONFLICT (collection_id, embedding_name, document_id) DO UPDATE SET vector = EXCLUDED.vector, "
            "segment_id = EXCLUDED.segment_id, segment_row = EXCLUDED.segment_row, "
            "version = nextval('document_vector_version')"), params)
