"""The preparer's reads from Postgres: cluster definitions, runs, and the selection.

The selection (collections, embedding, filters) is one SQL statement compiled by
SQLAlchemy with bound parameters (`matching`). Large results stream out of Postgres by
`COPY (...) TO STDOUT (FORMAT binary)` with every row the same width, so numpy decodes
them without a Python object per row (`FixedWidthCopy`).
"""
from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import Select, String, and_, any_, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import clusters, document_vectors, documents, executions
from clusterflow.filters import compile_filter
from clusterflow.runs import latest_full_run_query
from contracts.api import LogicalOperator

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


@dataclass
class Selection:
    namespace: str
    collection_ids: list[str]
    embedding_name: str
    filters: LogicalOperator | None




def matching(sel: Selection, *columns: Any) -> Select:
    """The selection's vector rows; joined to their documents only when a filter reads
    the payloads (every vector row has its document, by the foreign key)."""
    dv = document_vectors.c
    query = select(*(columns or (dv.segment_id, dv.segment_row))).where(
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
        query = latest_full_run_query(namespace, cluster_id, exclude=exclude)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row else None


class FixedWidthCopy:
    """Decodes a binary COPY stream of rows whose fields all have fixed widths (`widths`,
    in bytes: a vector, an id NUL-padded to the longest, an int8...) chunk by chunk, and
    hands each `rows_per_group` rows on to `on_rows`, as one (n, width) uint8 block per
    field, in a worker thread: decoding one group overlaps receiving the next. One group
    at a time is in the thread (groups arrive in order, memory stays at about two).
    No field may be NULL (its length would not be fixed)."""

    _HEADER = len(_SIGNATURE) + 4 + 4  # signature, flags, header extension length

    def __init__(self, widths: list[int], rows_per_group: int,
                 on_rows: Callable[[list[np.ndarray]], None]) -> None:
        self.widths = list(widths)
        self.width = 2 + sum(4 + w for w in self.widths)
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

    def decode(self, block: np.ndarray) -> list[np.ndarray]:
        fields = block[:, 0:2].view(">i2").ravel()
        if (fields != len(self.widths)).any():
            raise ValueError("a COPY row does not have the expected fields")
        columns, at = [], 2
        for w in self.widths:
            if (block[:, at:at + 4].view(">i4").ravel() != w).any():
                raise ValueError("a COPY row does not have the expected fixed width")
            columns.append(block[:, at + 4:at + 4 + w])
            at += 4 + w
        return columns

    @staticmethod
    def strings(padded: np.ndarray) -> pa.StringArray:
        """NUL-padded fixed-width text (n, width) -> strings (text cannot hold NUL, so the
        padding is unambiguous)."""
        present = padded != 0
        offsets = np.zeros(len(padded) + 1, dtype=np.int32)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        data = np.ascontiguousarray(padded[present])  # row-major: the ids, one after the other
        return pa.StringArray.from_buffers(len(padded), pa.py_buffer(offsets), pa.py_buffer(data))


def compile_query(query: Select) -> tuple[str, list[Any]]:
    compiled = query.compile(dialect=postgresql.asyncpg.dialect())
    params = [compiled.params[name] for name in compiled.positiontup]
    return str(compiled), params
