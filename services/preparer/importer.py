"""ImportRequested -> documents in Postgres, their vectors in new segments -> a task result.

One pass over the file, batch by batch (memory holds one batch, whatever the file's
size): each batch's rows are checked (`clusterflow/imports.py`), the good ones appended
to the segment being written for each embedding (uploaded every `max_rows`) and copied
into `documents` and `document_vectors` pointing at their segment rows; ids the
collection already holds go through staging tables and one upsert at the end. All of
it is one transaction, the segments' registration included. So an import lands whole or
not at all: a Postgres restart mid-import rolls it back and the consumer's retry imports
again from the start (the objects of the failed attempt are never registered, so no
manifest can name them); nothing stored before changes until the commit. The task's
result lists the refused rows by row number.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import uuid
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
from clusterflow.imports import (MAX_REPORTED_BAD_ROWS, BadRow, ImportFileError, check_batch, duplicated_rows,
                                 file_batches, plan_columns)
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
    key: str = ""
    segment_id: int = 0


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
            source, batches = file_batches(path, BATCH_ROWS)
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
        segments: set[int] = set()
        bad: list[BadRow] = []
        bad_count = imported = row = 0
        async with self.engine.begin() as conn:
            # Rows whose id the collection already holds are staged and upserted at the
            # end; the others are copied straight into the tables (no second write).
            await conn.execute(text(
                "CREATE TEMP TABLE import_documents (document_id text, payload jsonb) ON COMMIT DROP"))
            await conn.execute(text(
                "CREATE TEMP TABLE import_vectors (document_id text, embedding_name text, vector bytea, "
                "segment_id bigint, segment_row int) ON COMMIT DROP"))
            raw = (await conn.get_raw_connection()).driver_connection
            for batch in batches:
                checked = await asyncio.to_thread(check_batch, batch, plan, embeddings, row, duplicated)
                row += batch.num_rows
                bad_count += len(checked.bad)
                bad.extend(checked.bad[:max(0, MAX_REPORTED_BAD_ROWS - len(bad))])
                if checked.ids:
                    known = set(await raw.fetchval(
                        "SELECT coalesce(array_agg(document_id), '{}') FROM documents "
                        "WHERE collection_id = $1 AND document_id = ANY($2::text[])", event.collection_id, checked.ids))
                    fresh = [k for k, i in enumerate(checked.ids) if i not in known]
                    again = [k for k, i in enumerate(checked.ids) if i in known]
                    await self._copy_documents(raw, event, checked, fresh, again)
                    for name, X in checked.vectors.items():
                        places = await self._append(conn, writers[name], event, checked.ids, X)
                        segments.update(p[0] for p in places)
                        await self._copy_vectors(raw, event, name, checked.ids, X, places, fresh, again)
                    imported += len(checked.ids)
                done(row / total)
            for w in writers.values():
                await self._seal(conn, w)
            await self._upsert_staged(conn, event)
        return ImportResult(rows=row, imported=imported, bad_row_count=bad_count,
                            bad_rows=[ImportBadRow(row=b.row, document_id=b.document_id, reason=b.reason) for b in bad],
                            segments=len(segments), seconds=0.0)

    @staticmethod
    async def _copy_documents(raw, event: ImportRequested, checked, fresh: list[int], again: list[int]) -> None:
        if fresh:
            await raw.copy_records_to_table(
                "documents", columns=["collection_id", "document_id", "payload"],
                records=((event.collection_id, checked.ids[k], checked.payloads[k]) for k in fresh))
        if again:
            await raw.copy_records_to_table("import_documents", columns=["document_id", "payload"],
                                            records=((checked.ids[k], checked.payloads[k]) for k in again))

    @staticmethod
    async def _copy_vectors(raw, event: ImportRequested, name: str, ids: list[str], X: np.ndarray,
                            places: list[tuple[int, int]], fresh: list[int], again: list[int]) -> None:
        if fresh:
            await raw.copy_records_to_table(
                "document_vectors", columns=["collection_id", "document_id", "embedding_name", "vector", "segment_id",
                                             "segment_row"],
                records=((event.collection_id, ids[k], name, X[k].tobytes(), *places[k]) for k in fresh))
        if again:
            await raw.copy_records_to_table(
                "import_vectors", columns=["document_id", "embedding_name", "vector", "segment_id", "segment_row"],
                records=((ids[k], name, X[k].tobytes(), *places[k]) for k in again))

    async def _append(self, conn, w: _SegmentWriter, event: ImportRequested, ids: list[str], X: np.ndarray
                      ) -> list[tuple[int, int]]:
        """Append rows to the embedding's segment (a new one every `max_rows`); returns
        each row's (segment id, row). A segment is registered when it is opened, in the
        import's transaction: its id is known for the rows, and it exists for everyone
        else only once the import commits, with its object uploaded by then."""
        places: list[tuple[int, int]] = []
        at = 0
        while at < len(ids):
            if w.writer is None:
                w.writer = pq.ParquetWriter(w.path, datasets.dataset_schema(w.dimension), **datasets.WRITE_OPTIONS)
                w.key = segment_key(event.namespace, event.collection_id, w.embedding_name, f"imp-{uuid.uuid4().hex}")
                w.segment_id = int(await conn.scalar(text(
                    "INSERT INTO segments (namespace, collection_id, embedding_name, dimension, object_key, num_rows, "
                    "num_bytes) VALUES (:ns, :cid, :emb, :dim, :key, 0, 0) RETURNING segment_id"),
                    {"ns": event.namespace, "cid": event.collection_id, "emb": w.embedding_name, "dim": w.dimension,
                     "key": w.key}))
                w.rows = 0
            take = min(len(ids) - at, self.max_rows - w.rows)
            table = datasets.dataset_table(ids[at:at + take], X[at:at + take])
            await asyncio.to_thread(w.writer.write_table, table, datasets.rows_per_group(w.dimension))
            places.extend((w.segment_id, w.rows + k) for k in range(take))
            w.rows += take
            at += take
            if w.rows >= self.max_rows:
                await self._seal(conn, w)
        return places

    async def _seal(self, conn, w: _SegmentWriter) -> None:
        """Close and upload the embedding's current segment, and record its size."""
        if w.writer is None:
            return
        w.writer.close()
        w.writer = None
        size = await asyncio.to_thread(self.store.upload, w.key, w.path)
        os.unlink(w.path)
        await conn.execute(text("UPDATE segments SET num_rows = :rows, num_bytes = :size WHERE segment_id = :id"),
                           {"rows": w.rows, "size": size, "id": w.segment_id})

    @staticmethod
    async def _upsert_staged(conn, event: ImportRequested) -> None:
        """The rows whose ids the collection already held: a new payload, a new vector
        version pointing at this import's segment."""
        params: dict[str, Any] = {"cid": event.collection_id}
        await conn.execute(text(
            "INSERT INTO documents (collection_id, document_id, payload) "
            "SELECT :cid, document_id, payload FROM import_documents "
            "ON CONFLICT (collection_id, document_id) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now()"),
            params)
        await conn.execute(text(
            "INSERT INTO document_vectors (collection_id, document_id, embedding_name, vector, segment_id, segment_row) "
            "SELECT :cid, document_id, embedding_name, vector, segment_id, segment_row FROM import_vectors "
            "ON CONFLICT (collection_id, embedding_name, document_id) DO UPDATE SET vector = EXCLUDED.vector, "
            "segment_id = EXCLUDED.segment_id, segment_row = EXCLUDED.segment_row, "
            "version = nextval('document_vector_version')"), params)
