"""Bulk export of a run's documents from Postgres: one binary COPY, no row-by-row fetch.

The selection (collections, embedding, filters, seeded sample) is one SQL statement
compiled by SQLAlchemy with bound parameters, then streamed with
`COPY (...) TO STDOUT (FORMAT binary)` and decoded with numpy.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Select, String, and_, any_, func, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import clusters, document_vectors, documents
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
class Dataset:
    document_ids: list[str]
    vectors: np.ndarray  # (n, d) float32


def _matching(sel: Selection) -> Select:
    return (
        select(documents.c.document_id, document_vectors.c.vector)
        .join(document_vectors, and_(
            document_vectors.c.collection_id == documents.c.collection_id,
            document_vectors.c.document_id == documents.c.document_id,
        ))
        .where(
            # = ANY(array): one bound parameter, where IN would need render-time expansion.
            documents.c.collection_id == any_(literal(sel.collection_ids, ARRAY(String))),
            document_vectors.c.embedding_name == sel.embedding_name,
            compile_filter(sel.filters, documents.c.payload),
        )
    )


class PostgresDocuments:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def load_cluster(self, namespace: str, cluster_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(clusters).where(clusters.c.namespace == namespace, clusters.c.cluster_id == cluster_id)
            )).mappings().first()
        return dict(row) if row else None

    async def count(self, sel: Selection) -> int:
        async with self.engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(_matching(sel).subquery())) or 0

    async def export(self, sel: Selection, *, limit: int | None, seed: int) -> Dataset:
        """The matching documents; when `limit` is smaller than the match, a sample that
        depends only on the seed and the document ids (not on insertion order)."""
        query = _matching(sel)
        if limit is not None:
            order = func.md5(func.concat(documents.c.collection_id, "/", documents.c.document_id, "/", literal(seed)))
            query = query.order_by(order).limit(limit)
        sql, params = _compile(query)
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            chunks: list[bytes] = []

            async def sink(chunk: bytes) -> None:
                chunks.append(chunk)

            await raw.driver_connection.copy_from_query(sql, *params, output=sink, format="binary")
        return decode_binary_copy(b"".join(chunks))


def _compile(query: Select) -> tuple[str, list[Any]]:
    compiled = query.compile(dialect=postgresql.asyncpg.dialect())
    params = [compiled.params[name] for name in compiled.positiontup]
    return str(compiled), params


def decode_binary_copy(data: bytes) -> Dataset:
    """Decode `COPY ... (FORMAT binary)` rows of (text id, bytea float32 vector)."""
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a binary COPY stream")
    pos = len(_SIGNATURE) + 4
    (ext,) = struct.unpack_from("!i", data, pos)
    pos += 4 + ext
    ids: list[str] = []
    offsets: list[int] = []
    dim_bytes = None
    unpack = struct.unpack_from
    while True:
        (nfields,) = unpack("!h", data, pos)
        pos += 2
        if nfields == -1:
            break
        (n,) = unpack("!i", data, pos)
        ids.append(data[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
        (n,) = unpack("!i", data, pos)
        if dim_bytes is None:
            dim_bytes = n
        elif n != dim_bytes:
            raise ValueError(f"vectors of different sizes in one dataset ({n} and {dim_bytes} bytes)")
        offsets.append(pos + 4)
        pos += 4 + n
    if not ids:
        return Dataset([], np.zeros((0, 0), dtype=np.float32))
    view = memoryview(data)
    packed = b"".join(view[o:o + dim_bytes] for o in offsets)  # one copy, at C speed
    vectors = np.frombuffer(packed, dtype="<f4").reshape(len(ids), dim_bytes // 4)
    return Dataset(ids, vectors.astype(np.float32, copy=False))
