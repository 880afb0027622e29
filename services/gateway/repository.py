"""The gateway's data access: what it owns (collections, documents, clusters, run
requests) and what it reads (the tasks and executions read models).

Plain SQLAlchemy Core over one AsyncEngine; every query is scoped by namespace, so a
resource of another namespace is simply "not found".
"""
from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, Float, String, and_, bindparam, delete, func, insert, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import (
    clusters,
    collections,
    document_vectors,
    documents,
    executions,
    run_annotations,
    run_requests,
    segments,
    tasks,
)
from clusterflow.filters import ColumnField, compile_column_filter, search_fields, search_filter
from clusterflow.layouts import LayoutState, claim_layout
from clusterflow.readmodel import run_from_request, task_row
from clusterflow.runs import latest_full_run_query
from contracts.api import TERMINAL_STATUSES, FilterOperator, LogicalOperator, TaskStatusEnum
from contracts.resources import EXECUTION_STATUS, DocumentIn, ListExecutionsRequest


# What each list filters on (`filters`: clusterflow.filters' grammar over these
# fields) and searches (`search`: a case-insensitive substring of any of them).
CLUSTER_FIELDS = {
    "cluster_id": ColumnField(clusters.c.cluster_id),
    "cluster_name": ColumnField(clusters.c.cluster_name),
    "description": ColumnField(clusters.c.description),
    "clustering_method": ColumnField(clusters.c.clustering_method),
    "embedding_name": ColumnField(clusters.c.embedding_name),
    "collection_id": ColumnField(clusters.c.collection_ids, "array"),
    "created_at": ColumnField(clusters.c.created_at, "datetime"),
    "updated_at": ColumnField(clusters.c.updated_at, "datetime"),
}
CLUSTER_SEARCH = ("cluster_name", "description")

# A lowercase execution status (the SDK's) stands for every task status it covers.
_COVERED = {lower: tuple(s for s, low in EXECUTION_STATUS.items() if low == lower)
            for lower in dict.fromkeys(EXECUTION_STATUS.values())}
_SET_OPS = (FilterOperator.eq, FilterOperator.ne, FilterOperator.in_, FilterOperator.nin)
EXECUTION_FIELDS = {
    "run_id": ColumnField(executions.c.run_id),
    "task_id": ColumnField(executions.c.task_id),
    "run_name": ColumnField(run_annotations.c.run_name),
    "status": ColumnField(executions.c.status, ops=_SET_OPS, aliases=_COVERED),
    "mode": ColumnField(executions.c.mode, ops=_SET_OPS),
    "clustering_method": ColumnField(executions.c.clustering_method),
    "error_message": ColumnField(executions.c.error_message),
    "num_clusters": ColumnField(executions.c.num_clusters, "number"),
    "num_points": ColumnField(executions.c.num_points, "number"),
    "noise_count": ColumnField(executions.c.noise_count, "number"),
    **{f"metrics.{m}": ColumnField(executions.c.metrics[m], "number", jsonb=True)
       for m in ("silhouette_score", "davies_bouldin_index", "calinski_harabasz_score")},
    "created_at": ColumnField(executions.c.created_at, "datetime"),
    "started_at": ColumnField(executions.c.started_at, "datetime"),
    "completed_at": ColumnField(executions.c.completed_at, "datetime"),
}
EXECUTION_SEARCH = ("run_name", "run_id", "status")

TASK_FIELDS = {
    "task_id": ColumnField(tasks.c.task_id),
    "status": ColumnField(tasks.c.status, ops=_SET_OPS),
    "task_type": ColumnField(tasks.c.task_type, ops=_SET_OPS),
    "run_id": ColumnField(tasks.c.run_id),
    "cluster_id": ColumnField(tasks.c.cluster_id),
    "progress": ColumnField(tasks.c.progress, "number"),
    "created_at": ColumnField(tasks.c.created_at, "datetime"),
    "updated_at": ColumnField(tasks.c.updated_at, "datetime"),
}
TASK_SEARCH = ("task_id", "status", "task_type")


def list_condition(filters: LogicalOperator | dict | None, search: str | None, fields: dict[str, ColumnField],
                   searched: tuple[str, ...], what: str):
    """A list's `filters` AND its `search`, as SQL (clusterflow.filters.FilterError,
    a 400, for a filter the list cannot apply)."""
    return and_(compile_column_filter(filters, fields, what),
                compile_column_filter(search_filter(search, searched), search_fields(fields, searched), what))


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def pack_vector(values: list[float]) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


# The recent mean run time changes slowly: the execute path reads it at most this often.
MEAN_RUN_TIME_TTL_S = 2.0


class GatewayRepository:
    def __init__(self, engine: AsyncEngine, autocommit: AsyncEngine | None = None) -> None:
        self.engine = engine
        # Single statements on the hot paths (execute, task polling) run on an engine in
        # autocommit mode when one is given: no BEGIN and ROLLBACK round trips.
        self.autocommit = autocommit
        self._mean_run_time: tuple[float, float | None] = (0.0, None)  # (valid until, seconds)

    @asynccontextmanager
    async def _single(self):
        """A connection for single-statement reads and writes, outside a transaction."""
        if self.autocommit is not None:
            async with self.autocommit.connect() as conn:
                yield conn
        else:
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    # --- collections -------------------------------------------------------------------

    async def create_collection(self, namespace: str, values: dict[str, Any]) -> dict[str, Any]:
        row = {"collection_id": new_id("col"), "namespace": namespace, **values}
        async with self.engine.begin() as conn:
            result = await conn.execute(insert(collections).values(**row).returning(*collections.c))
            return dict(result.mappings().one())

    async def get_collection(self, namespace: str, collection_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(collections).where(
                    collections.c.namespace == namespace,
                    or_(collections.c.collection_id == collection_id,
                        collections.c.collection_name == collection_id),
                )
            )).mappings().first()
            if row is None:
                return None
            count = await conn.scalar(
                select(func.count()).select_from(documents).where(documents.c.collection_id == row["collection_id"])
            )
            return {**row, "document_count": count or 0}

    async def list_collections(self, namespace: str, limit: int, offset: int) -> tuple[list[dict], int]:
        counts = (
            select(documents.c.collection_id, func.count().label("document_count"))
            .group_by(documents.c.collection_id)
            .subquery()
        )
        query = (
            select(collections, func.coalesce(counts.c.document_count, 0).label("document_count"))
            .outerjoin(counts, counts.c.collection_id == collections.c.collection_id)
            .where(collections.c.namespace == namespace)
        )
        async with self.engine.connect() as conn:
            total = await conn.scalar(
                select(func.count()).select_from(collections).where(collections.c.namespace == namespace)
            )
            rows = (await conn.execute(
                query.order_by(collections.c.created_at.desc()).limit(limit).offset(offset)
            )).mappings().all()
        return [dict(r) for r in rows], total or 0

    async def delete_collection(self, namespace: str, collection_id: str) -> bool:
        async with self.engine.begin() as conn:
            # Its segments are retired, not dropped: runs still reading them finish, and
            # the preparer deletes the objects once none does.
            await conn.execute(update(segments).where(segments.c.collection_id == collection_id,
                                                      segments.c.namespace == namespace, segments.c.state == "active")
                               .values(state="retired", retired_at=func.now()))
            result = await conn.execute(
                delete(collections).where(
                    collections.c.namespace == namespace, collections.c.collection_id == collection_id
                )
            )
            return result.rowcount > 0

    # --- documents ---------------------------------------------------------------------

    async def upsert_documents(self, collection_id: str, docs: list[DocumentIn]) -> int:
        doc_rows = [{"collection_id": collection_id, "document_id": d.document_id, "payload": d.payload} for d in docs]
        vector_rows = [
            {"collection_id": collection_id, "document_id": d.document_id, "embedding_name": name,
             "vector": pack_vector(values)}
            for d in docs
            for name, values in d.embeddings.items()
        ]
        doc_stmt = pg_insert(documents)
        doc_stmt = doc_stmt.on_conflict_do_update(
            index_elements=[documents.c.collection_id, documents.c.document_id],
            set_={"payload": doc_stmt.excluded.payload, "updated_at": func.now()},
        )
        vec_stmt = pg_insert(document_vectors)
        vec_stmt = vec_stmt.on_conflict_do_update(
            index_elements=[document_vectors.c.collection_id, document_vectors.c.embedding_name,
                            document_vectors.c.document_id],
            # A new version, back in the unsealed tail: the preparer seals it
            # (services/preparer/segments.py); runs already prepared keep the old one.
            set_={"vector": vec_stmt.excluded.vector, "segment_id": None, "segment_row": None,
                  "version": func.nextval("document_vector_version")},
        )
        # One transaction: a batch lands whole or not at all.
        async with self.engine.begin() as conn:
            await conn.execute(doc_stmt, doc_rows)
            await conn.execute(vec_stmt, vector_rows)
        return len(doc_rows)

    async def list_documents(self, collection_id: str, limit: int, offset: int) -> tuple[list[dict], int]:
        async with self.engine.connect() as conn:
            total = await conn.scalar(
                select(func.count()).select_from(documents).where(documents.c.collection_id == collection_id)
            )
            rows = (await conn.execute(
                select(documents).where(documents.c.collection_id == collection_id)
                .order_by(documents.c.document_id).limit(limit).offset(offset)
            )).mappings().all()
        return [dict(r) for r in rows], total or 0

    async def get_document(self, collection_id: str, document_id: str) -> dict | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(documents).where(documents.c.collection_id == collection_id,
                                        documents.c.document_id == document_id)
            )).mappings().first()
        return dict(row) if row else None

    async def delete_document(self, collection_id: str, document_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(documents).where(documents.c.collection_id == collection_id,
                                        documents.c.document_id == document_id)
            )
            return result.rowcount > 0

    # --- clusters ----------------------------------------------------------------------

    async def create_cluster(self, namespace: str, values: dict[str, Any]) -> dict[str, Any]:
        row = {"cluster_id": new_id("clust"), "namespace": namespace, **values}
        row["cluster_name"] = row.get("cluster_name") or row["cluster_id"]  # the hosted API's name is optional
        async with self.engine.begin() as conn:
            result = await conn.execute(insert(clusters).values(**row).returning(*clusters.c))
            return dict(result.mappings().one())

    def _cluster_query(self):
        latest = (
            select(executions.c.run_id, executions.c.status, executions.c.task_id)
            .where(executions.c.cluster_id == clusters.c.cluster_id)
            .order_by(executions.c.created_at.desc())
            .limit(1)
            .lateral("latest")
        )
        return select(
            clusters,
            latest.c.run_id.label("last_run_id"),
            latest.c.status.label("last_execution_status"),
            latest.c.task_id.label("last_execution_task_id"),
        ).outerjoin(latest, true())

    async def get_cluster(self, namespace: str, cluster_id: str) -> dict[str, Any] | None:
        async with self._single() as conn:
            row = (await conn.execute(
                self._cluster_query().where(
                    clusters.c.namespace == namespace,
                    or_(clusters.c.cluster_id == cluster_id, clusters.c.cluster_name == cluster_id),
                ).order_by(clusters.c.created_at.desc()).limit(1)
            )).mappings().first()
        return dict(row) if row else None

    async def update_cluster(self, namespace: str, cluster_id: str, values: dict[str, Any]) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(clusters)
                .where(clusters.c.namespace == namespace, clusters.c.cluster_id == cluster_id)
                .values(**values, updated_at=func.now())
            )
            return result.rowcount > 0

    async def delete_cluster(self, namespace: str, cluster_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(clusters).where(clusters.c.namespace == namespace, clusters.c.cluster_id == cluster_id)
            )
            return result.rowcount > 0

    async def list_clusters(
        self, namespace: str, *, filters: LogicalOperator | dict | None, search: str | None, sort_field: str,
        descending: bool, limit: int, offset: int,
    ) -> tuple[list[dict], int, dict[str, Any]]:
        where = and_(clusters.c.namespace == namespace,
                     list_condition(filters, search, CLUSTER_FIELDS, CLUSTER_SEARCH, "clusters"))
        order = clusters.c[sort_field].desc() if descending else clusters.c[sort_field].asc()
        async with self.engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(clusters).where(where)) or 0
            rows = (await conn.execute(
                self._cluster_query().where(where).order_by(order, clusters.c.cluster_id).limit(limit).offset(offset)
            )).mappings().all()
            by_method = (await conn.execute(
                select(clusters.c.clustering_method, func.count()).where(where).group_by(clusters.c.clustering_method)
            )).all()
        stats = {"total_clusters": total, "clusters_by_method": {m: n for m, n in by_method}}
        return [dict(r) for r in rows], total, stats

    # --- runs --------------------------------------------------------------------------

    async def record_run_request(self, *, run_id: str, task_id: str, namespace: str, cluster_id: str,
                                 options: dict[str, Any]) -> datetime:
        async with self._single() as conn:  # one INSERT: atomic on its own
            return await conn.scalar(
                insert(run_requests).values(
                    run_id=run_id, task_id=task_id, namespace=namespace, cluster_id=cluster_id, options=options
                ).returning(run_requests.c.created_at)
            )

    async def record_cancel_request(self, run_id: str) -> None:
        """Idempotent: the first request's time stands."""
        async with self.engine.begin() as conn:
            await conn.execute(update(run_requests).where(run_requests.c.run_id == run_id,
                                                          run_requests.c.canceled_at.is_(None))
                               .values(canceled_at=func.now()))

    async def forget_run_request(self, run_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(run_requests).where(run_requests.c.run_id == run_id))

    async def get_task(self, namespace: str, task_id: str) -> dict[str, Any] | None:
        async with self._single() as conn:
            row = (await conn.execute(
                select(tasks).where(tasks.c.namespace == namespace, tasks.c.task_id == task_id)
            )).mappings().first()
            if row is not None:
                return dict(row)
            # Accepted but not yet projected: still a PENDING task, not a 404.
            req = (await conn.execute(
                select(run_requests).where(run_requests.c.namespace == namespace, run_requests.c.task_id == task_id)
            )).mappings().first()
        if req is None:
            return None
        return {**task_row(run_from_request(dict(req))), "created_at": req["created_at"],
                "updated_at": req["created_at"]}

    async def queue_position(self, created_at: datetime) -> tuple[int, float | None]:
        """1-based position among runs not yet started, and the seconds one run takes at
        the recent pace (None before any run completed).

        The pace is the smaller of two readings over the last 20 completed runs: the mean
        time between their completions (what a busy, pipelined system achieves) and their
        mean duration (what an idle one does; from the start of the work, or from the
        request while its start is not projected yet). One statement: an indexed count
        (ix_tasks_status_created), the pace (ix_executions_status_completed) read at most
        every MEAN_RUN_TIME_TTL_S."""
        waiting = [TaskStatusEnum.PENDING.value, TaskStatusEnum.QUEUED.value]
        ahead = (select(func.count()).select_from(tasks)
                 .where(tasks.c.status.in_(waiting), tasks.c.created_at < created_at).scalar_subquery())
        now = time.monotonic()
        valid_until, pace_s = self._mean_run_time
        async with self._single() as conn:
            if valid_until > now:
                count = await conn.scalar(select(ahead))
            else:
                recent = (
                    select(executions.c.completed_at,
                           func.extract("epoch", executions.c.completed_at - func.coalesce(
                               executions.c.started_at, executions.c.created_at)).label("s"))
                    .where(executions.c.status == TaskStatusEnum.COMPLETED.value,
                           executions.c.completed_at.is_not(None))
                    .order_by(executions.c.completed_at.desc()).limit(20).subquery()
                )
                pace = select(func.count(), func.extract("epoch", func.max(recent.c.completed_at)
                                                         - func.min(recent.c.completed_at)),
                              func.avg(recent.c.s)).select_from(recent).subquery()
                count, n, span, mean = (await conn.execute(select(ahead, *pace.c))).one()
                readings = [float(mean)] if mean is not None else []
                if n and n >= 2 and span:
                    readings.append(float(span) / (n - 1))
                pace_s = min(readings) if readings else None
                if pace_s is not None:  # until a first run completes, ask every time
                    self._mean_run_time = (now + MEAN_RUN_TIME_TTL_S, pace_s)
        return (count or 0) + 1, pace_s

    @staticmethod
    def _executions_query():
        """The executions read model with what users wrote onto each run."""
        return select(executions, run_annotations.c.run_name, run_annotations.c.label_overrides).outerjoin(
            run_annotations, run_annotations.c.run_id == executions.c.run_id)

    async def get_execution(self, namespace: str, cluster_id: str, run_id: str | None) -> dict[str, Any] | None:
        query = self._executions_query().where(executions.c.namespace == namespace, executions.c.cluster_id == cluster_id)
        query = query.where(executions.c.run_id == run_id) if run_id else query.order_by(
            executions.c.created_at.desc()).limit(1)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
            if row is not None or run_id is None:
                return dict(row) if row else None
            req = (await conn.execute(
                select(run_requests).where(run_requests.c.namespace == namespace,
                                           run_requests.c.cluster_id == cluster_id, run_requests.c.run_id == run_id)
            )).mappings().first()
        return run_from_request(dict(req)) if req is not None else None

    async def list_executions(self, namespace: str, cluster_id: str, query: ListExecutionsRequest, *,
                              filters: LogicalOperator | None, limit: int, offset: int
                              ) -> tuple[list[dict], int, dict[str, Any]]:
        """A cluster's runs by the body's own fields (status either spelling, dates,
        counts, silhouette), its `filters` and its `search`."""
        cond = and_(executions.c.namespace == namespace, executions.c.cluster_id == cluster_id,
                    *_execution_fields(query),
                    list_condition(filters, query.search, EXECUTION_FIELDS, EXECUTION_SEARCH, "executions"))
        sort_field, descending = query.sort.field, query.sort.direction == "desc"
        order = executions.c[sort_field].desc() if descending else executions.c[sort_field].asc()
        duration_ms = func.extract("epoch", executions.c.completed_at - executions.c.started_at) * 1000
        annotated = executions.outerjoin(run_annotations, run_annotations.c.run_id == executions.c.run_id)
        async with self.engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(annotated).where(cond)) or 0
            rows = (await conn.execute(
                self._executions_query().where(cond).order_by(order, executions.c.run_id).limit(limit).offset(offset)
            )).mappings().all()
            by_status = dict((await conn.execute(
                select(executions.c.status, func.count()).select_from(annotated).where(cond)
                .group_by(executions.c.status)
            )).all())
            agg = (await conn.execute(
                select(func.avg(duration_ms), func.sum(executions.c.num_points), func.avg(executions.c.num_clusters))
                .select_from(annotated).where(cond)
            )).one()
        stats = {
            "total_executions": total,
            "executions_by_status": by_status,
            "avg_execution_time_ms": float(agg[0]) if agg[0] is not None else None,
            "total_documents_clustered": int(agg[1] or 0),
            "avg_num_clusters": float(agg[2]) if agg[2] is not None else None,
        }
        return [dict(r) for r in rows], total, stats

    async def annotate_run(self, namespace: str, cluster_id: str, run_id: str, *, run_name: str | None = None,
                           labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Set a run's name, or merge label overrides into its own (one upsert)."""
        stmt = pg_insert(run_annotations).values(run_id=run_id, namespace=namespace, cluster_id=cluster_id,
                                                 run_name=run_name, label_overrides=labels or {})
        changes: dict[str, Any] = {"updated_at": func.now()}
        if run_name is not None:
            changes["run_name"] = stmt.excluded.run_name
        if labels:
            changes["label_overrides"] = run_annotations.c.label_overrides.op("||")(stmt.excluded.label_overrides)
        stmt = stmt.on_conflict_do_update(index_elements=[run_annotations.c.run_id], set_=changes)
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt.returning(*run_annotations.c))).mappings().one()
        return dict(row)

    async def list_tasks(self, namespace: str, *, statuses: list[str] | None, task_type: str | None,
                         sort_field: str, descending: bool, limit: int, offset: int,
                         filters: LogicalOperator | None = None, search: str | None = None
                         ) -> tuple[list[dict], int]:
        cond = [tasks.c.namespace == namespace, list_condition(filters, search, TASK_FIELDS, TASK_SEARCH, "tasks")]
        if statuses:
            cond.append(tasks.c.status.in_(statuses))
        if task_type:
            cond.append(tasks.c.task_type == task_type)
        async with self.engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(tasks).where(*cond)) or 0
            order = tasks.c[sort_field].desc() if descending else tasks.c[sort_field].asc()
            rows = (await conn.execute(select(tasks).where(*cond).order_by(
                order, tasks.c.task_id).limit(limit).offset(offset))).mappings().all()
        return [dict(r) for r in rows], total

    async def get_run(self, namespace: str, run_id: str) -> dict[str, Any] | None:
        """A run of any cluster of the namespace (composite sources, enrichment); one
        accepted but not yet projected is PENDING, as in `get_execution`."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(executions).where(executions.c.namespace == namespace, executions.c.run_id == run_id)
            )).mappings().first()
            if row is not None:
                return dict(row)
            req = (await conn.execute(
                select(run_requests).where(run_requests.c.namespace == namespace, run_requests.c.run_id == run_id)
            )).mappings().first()
        return run_from_request(dict(req)) if req is not None else None

    async def latest_completed_full_run(self, namespace: str, cluster_id: str) -> dict[str, Any] | None:
        """The cluster's latest completed full run with centroids: what mode=assign uses."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(latest_full_run_query(namespace, cluster_id))).mappings().first()
        return dict(row) if row else None

    async def embedding_dimension(self, namespace: str, cluster_id: str) -> int | None:
        """The dimension of the embedding a cluster clusters (declared by its collections)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(clusters.c.embedding_name, clusters.c.collection_ids)
                .where(clusters.c.namespace == namespace, clusters.c.cluster_id == cluster_id)
            )).first()
            if row is None:
                return None
            dims = (await conn.scalars(
                select(collections.c.embeddings[row.embedding_name].as_integer())
                .where(collections.c.collection_id.in_(list(row.collection_ids)))
            )).all()
        found = {d for d in dims if d is not None}
        return found.pop() if len(found) == 1 else None

    # --- enrichment --------------------------------------------------------------------

    async def enrich_batch(self, source_collection_id: str, target_collection_id: str | None,
                           rows: dict[str, list[Any]], embedding_names: list[str]) -> int:
        """Merge the batch's cluster fields into the documents' payloads (`payload ||
        jsonb_build_object(...)`, so re-running writes the same values over the same keys):
        in place, or into copies of the documents and their vectors in the target
        collection. One transaction per batch. Returns the documents written."""
        values = (
            "unnest(:document_id, :cluster_id, :cluster_label, :distance, :stable_id, :run_id) "
            "AS v(document_id, cluster_id, cluster_label, distance_to_centroid, stable_id, run_id)"
        )
        fields = ("jsonb_build_object('cluster_id', v.cluster_id, 'cluster_label', v.cluster_label, "
                  "'distance_to_centroid', v.distance_to_centroid, 'cluster_stable_id', v.stable_id, "
                  "'cluster_run_id', v.run_id)")
        params = {**rows, "source": source_collection_id}
        binds = [bindparam(k, type_=ARRAY(Float if k == "distance" else String)) for k in rows]
        async with self.engine.begin() as conn:
            if target_collection_id is None:
                result = await conn.execute(text(
                    f"UPDATE documents AS d SET payload = d.payload || {fields}, updated_at = now() "
                    f"FROM {values} WHERE d.collection_id = :source AND d.document_id = v.document_id"
                ).bindparams(*binds), params)
                return result.rowcount
            result = await conn.execute(text(
                "INSERT INTO documents (collection_id, document_id, payload) "
                f"SELECT :target, d.document_id, d.payload || {fields} FROM documents AS d JOIN {values} "
                "ON d.document_id = v.document_id WHERE d.collection_id = :source "
                "ON CONFLICT (collection_id, document_id) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now()"
            ).bindparams(*binds), {**params, "target": target_collection_id})
            await conn.execute(text(
                # The copies point at the same segment row: segments are shared, and
                # compaction moves every row that points at one.
                "INSERT INTO document_vectors (collection_id, document_id, embedding_name, vector, segment_id, "
                "segment_row) "
                "SELECT :target, dv.document_id, dv.embedding_name, dv.vector, dv.segment_id, dv.segment_row "
                "FROM document_vectors AS dv "
                "WHERE dv.collection_id = :source AND dv.document_id = ANY(:document_id) "
                "AND dv.embedding_name = ANY(:names) "
                "ON CONFLICT (collection_id, embedding_name, document_id) DO UPDATE SET vector = EXCLUDED.vector, "
                "segment_id = EXCLUDED.segment_id, segment_row = EXCLUDED.segment_row, "
                "version = nextval('document_vector_version')"
            ).bindparams(bindparam("document_id", type_=ARRAY(String)), bindparam("names", type_=ARRAY(String))),
                {"target": target_collection_id, "source": source_collection_id,
                 "document_id": rows["document_id"], "names": embedding_names})
            return result.rowcount

    # --- the viewer's search and deferred layouts -----------------------------------------

    async def documents_matching(self, collection_ids: list[str], pattern: str, cap: int) -> list[str]:
        """Ids (in order, at most `cap`) of the collections' documents with a top-level
        payload value ILIKE `pattern`."""
        async with self.engine.connect() as conn:
            return list((await conn.execute(_SEARCH_SQL, {"collections": collection_ids, "pattern": pattern,
                                                          "cap": cap})).scalars().all())

    async def payloads(self, collection_ids: list[str], document_ids: list[str]) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(_PAYLOADS_SQL, {"collections": collection_ids, "ids": document_ids})
            return {r.document_id: r.payload for r in rows}

    async def claim_layout(self, namespace: str, run_id: str) -> LayoutState:
        """Claim a run's deferred layout (clusterflow/layouts.py: one caller of any replica wins)."""
        return await claim_layout(self.engine, namespace, run_id)

    async def active_runs(self, cluster_id: str) -> list[str]:
        active = [s.value for s in TaskStatusEnum if s not in TERMINAL_STATUSES]
        async with self.engine.connect() as conn:
            return list((await conn.scalars(
                select(executions.c.run_id).where(executions.c.cluster_id == cluster_id,
                                                  executions.c.status.in_(active))
            )).all())


def task_statuses(values: list[Any]) -> list[str]:
    """UPPERCASE task statuses for statuses given either way (lowercase ones stand for
    every task status they cover)."""
    wanted = {str(getattr(v, "value", v)) for v in values}
    return sorted({s for s, lower in EXECUTION_STATUS.items() if s in wanted or lower in wanted})


def _execution_fields(query: ListExecutionsRequest) -> list:
    """The executions list body's own filter fields, as SQL."""
    where = []
    if query.status:
        where.append(executions.c.status.in_(task_statuses(query.status)))
    if query.created_after:
        where.append(executions.c.created_at >= query.created_after)
    if query.created_before:
        where.append(executions.c.created_at < query.created_before)
    if query.min_num_clusters is not None:
        where.append(executions.c.num_clusters >= query.min_num_clusters)
    if query.max_num_clusters is not None:
        where.append(executions.c.num_clusters <= query.max_num_clusters)
    if query.min_silhouette_score is not None:
        where.append(executions.c.metrics["silhouette_score"].as_float() >= query.min_silhouette_score)
    return where


_SEARCH_SQL = text("""
    SELECT d.document_id FROM documents d
    WHERE d.collection_id = ANY(:collections)
      AND EXISTS (SELECT 1 FROM jsonb_each_text(d.payload) kv WHERE kv.value ILIKE :pattern)
    ORDER BY d.document_id LIMIT :cap
""")
_PAYLOADS_SQL = text("SELECT document_id, payload FROM documents "
                     "WHERE collection_id = ANY(:collections) AND document_id = ANY(:ids)")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
