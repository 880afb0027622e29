"""Rules about runs that several services apply to the `executions` read model, written
once: which run an assign run (or a stable-id match) builds on, whether a run can serve
as a source, and which of its centroids are real clusters."""
from __future__ import annotations

from typing import Any

import polars as pl
from sqlalchemy import Select, select

from clusterflow.db.schema import executions
from contracts.api import COMPLETED_STATUSES, NOISE_GROUP_ID

COMPLETED = tuple(sorted(s.value for s in COMPLETED_STATUSES))


def latest_full_run_query(namespace: str, cluster_id: str, *, exclude: str | None = None) -> Select:
    """The cluster's latest completed full run that has centroids (by creation, then id)."""
    query = (
        select(executions)
        .where(executions.c.namespace == namespace, executions.c.cluster_id == cluster_id,
               executions.c.mode == "full", executions.c.status.in_(COMPLETED),
               executions.c.artifacts.is_not(None), executions.c.num_clusters > 0)
        .order_by(executions.c.created_at.desc(), executions.c.run_id.desc()).limit(1)
    )
    if exclude is not None:
        query = query.where(executions.c.run_id != exclude)
    return query


def source_problem(row: dict[str, Any] | None) -> tuple[str, str] | None:
    """Why a run cannot serve as a source of an assign or composite run, as (code, what
    is wrong), or None when it can. The caller words the message for its audience."""
    if row is None:
        return "source_not_found", "does not exist in this namespace"
    if row["status"] not in COMPLETED:
        return "source_not_completed", f"is {row['status']}, not COMPLETED"
    if not row.get("artifacts") or not row.get("num_clusters"):
        return "source_without_centroids", "has no centroids"
    return None


def real_centroids(frame: pl.DataFrame) -> pl.DataFrame:
    """A run's stored centroids without the noise row and without empty clusters."""
    return frame.filter((pl.col("cluster_id") != NOISE_GROUP_ID) & pl.col("centroid").is_not_null())
