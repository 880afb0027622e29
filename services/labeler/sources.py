"""The labeler's read ports and their adapters: run results in S3, payloads in Postgres.

Only what labeling needs is read: the members table (three small columns), the vectors
of the candidate representatives (through the run's manifest, never the whole matrix
in memory), and the payloads of those candidates.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import polars as pl
from sqlalchemy import ARRAY, String, any_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import clusters, documents
from clusterflow.segments import RunVectors, SegmentCache, load_manifest
from clusterflow.storage import ObjectStore

MEMBER_COLUMNS = ["document_id", "cluster_id", "distance_to_centroid"]


class ResultsSource(Protocol):
    def members(self, key: str) -> pl.DataFrame: ...
    def vectors(self, key: str, ids: Iterable[str]) -> dict[str, np.ndarray]: ...


class DocumentSource(Protocol):
    async def collection_ids(self, namespace: str, cluster_id: str) -> list[str]: ...
    async def payloads(self, collection_ids: Sequence[str], document_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


class ObjectStoreResults:
    """Results read through the object store port; vectors through the run's manifest
    and the labeler's segment cache (only the rows asked for are copied out)."""

    def __init__(self, store: ObjectStore, cache: SegmentCache) -> None:
        self.store = store
        self.cache = cache

    def members(self, key: str) -> pl.DataFrame:
        return self.store.get_parquet(key, columns=MEMBER_COLUMNS)

    def vectors(self, manifest_key: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = set(ids)
        if not wanted or not self.store.exists(manifest_key):
            return {}
        return RunVectors(load_manifest(self.store, manifest_key), self.cache).vectors_for(wanted)


class PostgresPayloads:
    def __init__(self, engine: AsyncEngine, batch: int = 5_000) -> None:
        self.engine = engine
        self.batch = batch

    async def collection_ids(self, namespace: str, cluster_id: str) -> list[str]:
        async with self.engine.connect() as conn:
            found = await conn.scalar(select(clusters.c.collection_ids).where(
                clusters.c.cluster_id == cluster_id, clusters.c.namespace == namespace))
        return list(found or [])

    async def payloads(self, collection_ids: Sequence[str], document_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not collection_ids or not document_ids:
            return {}
        rank = {c: i for i, c in enumerate(collection_ids)}
        query = (select(documents.c.collection_id, documents.c.document_id, documents.c.payload)
                 .where(documents.c.collection_id == any_(bindparam("cids", type_=ARRAY(String))),
                        documents.c.document_id == any_(bindparam("dids", type_=ARRAY(String)))))
        best: dict[str, tuple[int, dict[str, Any]]] = {}
        ids = list(dict.fromkeys(document_ids))
        async with self.engine.connect() as conn:
            for start in range(0, len(ids), self.batch):
                rows = await conn.execute(query, {"cids": list(collection_ids), "dids": ids[start:start + self.batch]})
                for collection_id, document_id, payload in rows:
                    # The same id in two collections: the cluster's first collection wins.
                    r = rank.get(collection_id, len(rank))
                    if document_id not in best or r < best[document_id][0]:
                        best[document_id] = (r, payload or {})
        return {k: v for k, (_, v) in best.items()}
