"""Bulk export of a run's documents from Postgres: one binary COPY, no row-by-row fetch.

The selection (collections, embedding, filters, seeded sample) is one SQL statement
compiled by SQLAlchemy with bound parameters, then streamed with
`COPY (...) TO STDOUT (FORMAT binary)` and decoded with numpy.

`export_to_parquet` never holds the documents in memory: the COPY makes
every row the same width (the vector, then the document id padded with NUL bytes to
the longest id: text cannot contain NUL, so the padding is unambiguous), so each
chunk of the stream decodes with numpy alone and goes to the dataset file
(`clusterflow/datasets.py`) as a row group of `rows_per_group` documents.
"""
from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Integer, LargeBinary, Select, String, and_, any_, cast, func, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow import datasets
from clusterflow.datasets import WRITE_OPTIONS, dataset_schema
from clusterflow.db.schema import clusters, collections, document_vectors, documents, executions
from clusterflow.filters import compile_filter
from contracts.api import LogicalOperator

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


@dataclass
class Selection:
    namespace: str
    collection_ids: list[str]
    embedding_name: str
    filters: LogicalOperator | None


@dataclass
class Exported:
    rows: int
    dimension: int


COMPLETED = ("COMPLETED", "COMPLETED_WITH_ERRORS")


def _matching(sel: Selection, *columns: Any) -> Select:
    """The selection's vector rows; joined to their documents only when a filter reads
    the payloads (every vector row has its document, by the foreign key)."""
    dv = document_vectors.c
    query = select(*(columns or (dv.document_id, dv.vector))).where(
        # = ANY(array): one bound parameter, where IN would need render-time expansion.
        dv.collection_id == any_(literal(sel.collection_ids, ARRAY(String))),
        dv.embedding_name == sel.embedding_name,
    )
    if sel.filters is None:
        return query
    return query.join(documents, and_(documents.c.collection_id == dv.collection_id,
                                      documents.c.document_id == dv.document_id)
                      ).where(compile_filter(sel.filters, documents.c.payload))


class PostgresDocuments:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def load_cluster(self, namespace: str, cluster_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(clusters).where(clusters.c.namespace == namespace, clusters.c.cluster_id == cluster_id)
            )).mappings().first()
        return dict(row) if row else None

    async def load_run(self, namespace: str, run_id: str) -> dict[str, Any] | None:
        """A run's row of the executions read model (any cluster of the namespace)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(executions).where(executions.c.namespace == namespace, executions.c.run_id == run_id)
            )).mappings().first()
        return dict(row) if row else None

    async def latest_full_run(self, namespace: str, cluster_id: str, *, exclude: str | None = None
                              ) -> dict[str, Any] | None:
        """The cluster's latest completed full run that has centroids (by creation)."""
        query = (
            select(executions)
            .where(executions.c.namespace == namespace, executions.c.cluster_id == cluster_id,
                   executions.c.mode == "full", executions.c.status.in_(COMPLETED),
                   executions.c.artifacts.is_not(None), executions.c.num_clusters > 0)
            .order_by(executions.c.created_at.desc(), executions.c.run_id.desc()).limit(1)
        )
        if exclude is not None:
            query = query.where(executions.c.run_id != exclude)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row else None

    async def count(self, sel: Selection) -> int:
        async with self.engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(_matching(sel).subquery())) or 0

    async def export_to_parquet(self, sel: Selection, path: str, *, limit: int | None, seed: int,
                                rows_per_group: int | None = None,
                                on_rows: Callable[[int], None] | None = None) -> Exported:
        """Stream the matching documents into a dataset file (`clusterflow/datasets.py`),
        `rows_per_group` at a time; memory holds one row group, whatever the count.
        `on_rows` hears the number of rows exported so far after each row group."""
        dimension, id_width = await self._widths(sel)
        vector_bytes = 4 * dimension
        dv = document_vectors.c
        padded_id = func.convert_to(dv.document_id, "UTF8").op("||")(func.decode(
            func.repeat("00", literal(id_width) - func.octet_length(dv.document_id)), "hex"))
        query = _matching(sel, dv.vector, cast(padded_id, LargeBinary)).where(
            # Rows that would not fit the fixed width (documents added since the widths
            # were read) are left for the next run rather than misread.
            func.octet_length(dv.vector) == vector_bytes,
            func.octet_length(dv.document_id) <= id_width,
        )
        if limit is not None:
            order = func.md5(func.concat(dv.collection_id, "/", dv.document_id, "/", literal(seed)))
            query = query.order_by(order).limit(limit)
        sql, params = _compile(query)
        writer = pq.ParquetWriter(path, dataset_schema(dimension), **WRITE_OPTIONS)
        written = 0

        def write(table: pa.Table) -> None:
            nonlocal written
            writer.write_table(table)
            written += table.num_rows
            if on_rows is not None:
                on_rows(written)

        stream = FixedWidthCopy(vector_bytes, id_width, rows_per_group or datasets.rows_per_group(dimension),
                                on_rows=write)
        try:
            async with self.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                await raw.driver_connection.copy_from_query(sql, *params, output=stream.feed, format="binary")
            await stream.finish()
        finally:
            await stream.drain()  # no thread may still write when the file closes
            writer.close()
        return Exported(rows=stream.rows, dimension=dimension)

    async def _widths(self, sel: Selection) -> tuple[int, int]:
        """The embedding's dimension (declared by the collections) and the longest
        document id in bytes, over the selection's collections."""
        in_collections = documents.c.collection_id == any_(literal(sel.collection_ids, ARRAY(String)))
        async with self.engine.connect() as conn:
            declared = (await conn.execute(
                select(collections.c.embeddings[sel.embedding_name].astext.cast(Integer)).where(
                    collections.c.collection_id == any_(literal(sel.collection_ids, ARRAY(String))))
            )).scalars().all()
            longest = await conn.scalar(select(func.max(func.octet_length(documents.c.document_id)))
                                        .where(in_collections))
        dims = {d for d in declared if d is not None}
        if len(dims) != 1:
            raise ValueError(f"embedding {sel.embedding_name!r} has no single dimension across the "
                             f"collections (declared: {sorted(dims)})")
        return dims.pop(), int(longest or 1)



class FixedWidthCopy:
    """Decodes a binary COPY stream of fixed-width rows (vector, NUL-padded id) chunk by
    chunk and hands each `rows_per_group` rows on, as an Arrow table, to `on_rows` in a
    worker thread: decoding and writing one group overlaps receiving the next. One group
    at a time is in the thread (so groups arrive in order and memory stays bounded to
    about two groups)."""

    _HEADER = len(_SIGNATURE) + 4 + 4  # signature, flags, header extension length

    def __init__(self, vector_bytes: int, id_width: int, rows_per_group: int,
                 on_rows: Callable[[pa.Table], None]) -> None:
        self.vector_bytes = vector_bytes
        self.id_width = id_width
        self.width = 2 + 4 + vector_bytes + 4 + id_width
        self.rows_per_group = rows_per_group
        self.on_rows = on_rows
        self.chunks: list[bytes] = []
        self.size = 0
        self.header_left: int | None = None  # bytes of header still to skip, once known
        self.pending: asyncio.Future | None = None
        self.rows = 0

    async def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.header_left != 0 and not self._skip_header():
            return
        if self.size >= self.rows_per_group * self.width:
            await self._emit()

    async def finish(self) -> None:
        if self.header_left != 0 and not self._skip_header():
            raise ValueError("the COPY stream ended inside its header")
        rest = await self._emit()
        if self.pending is not None:
            await self.pending
            self.pending = None
        if rest != b"\xff\xff":
            raise ValueError(f"the COPY stream ended with {len(rest)} unexpected bytes")

    async def drain(self) -> None:
        """Wait for the group in the worker thread, if any (whatever it raised)."""
        if self.pending is not None:
            await asyncio.gather(self.pending, return_exceptions=True)
            self.pending = None

    def _take(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks, self.size = [], 0
        return data

    def _keep(self, rest: bytes) -> None:
        if rest:
            self.chunks, self.size = [rest], len(rest)

    def _skip_header(self) -> bool:
        if self.header_left is None:
            if self.size < self._HEADER:
                return False
            data = self._take()
            if not data.startswith(_SIGNATURE):
                raise ValueError("not a binary COPY stream")
            (extension,) = struct.unpack_from("!i", data, self._HEADER - 4)
            self.header_left = self._HEADER + extension
            self._keep(data)
        if self.header_left:
            data = self._take()
            skipped = min(self.header_left, len(data))
            self.header_left -= skipped
            self._keep(data[skipped:])
        return self.header_left == 0

    async def _emit(self) -> bytes:
        """Hand every complete row on; returns (and keeps) the bytes after them."""
        data = self._take()
        n = len(data) // self.width
        rest = data[n * self.width:]
        self._keep(rest)
        if n:
            block = np.frombuffer(data, dtype=np.uint8, count=n * self.width).reshape(n, self.width)
            if self.pending is not None:
                await self.pending
            self.pending = asyncio.ensure_future(asyncio.to_thread(self._write, block))
            self.rows += n
        return rest

    def _write(self, block: np.ndarray) -> None:
        self.on_rows(self.decode(block))

    def decode(self, block: np.ndarray) -> pa.Table:
        L = self.vector_bytes
        fields = block[:, 0:2].view(">i2").ravel()
        vec_len = block[:, 2:6].view(">i4").ravel()
        id_len = block[:, 6 + L:10 + L].view(">i4").ravel()
        if (fields != 2).any() or (vec_len != L).any() or (id_len != self.id_width).any():
            raise ValueError("a COPY row does not have the expected fixed width")
        vectors = np.ascontiguousarray(block[:, 6:6 + L]).view("<f4")
        padded = block[:, 10 + L:]
        present = padded != 0
        offsets = np.zeros(len(block) + 1, dtype=np.int32)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        data = np.ascontiguousarray(padded[present])  # row-major: the ids, one after the other
        ids = pa.StringArray.from_buffers(len(block), pa.py_buffer(offsets), pa.py_buffer(data))
        return pa.table([ids, datasets.vector_array(vectors)], schema=dataset_schema(L // 4))


def _compile(query: Select) -> tuple[str, list[Any]]:
    compiled = query.compile(dialect=postgresql.asyncpg.dialect())
    params = [compiled.params[name] for name in compiled.positiontup]
    return str(compiled), params
