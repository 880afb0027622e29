"""Event models that travel on Kafka.

Every event carries the same envelope (event id, schema version, namespace, run id,
cluster id, task id, timestamp). Events that a service derives from another one get a
*deterministic* event id (`derived_event_id`), so a redelivered input produces the very
same output event and every consumer downstream can drop the duplicate by id.

Large data never rides here: events carry S3 keys, counts and small results.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.api import (
    ExecuteClusterByIdRequest,
    ExecutionMode,
    LLMLabeling,
    TaskStatusEnum,
)

SCHEMA_VERSION = 1

# Events derive their ids from the run and what they report, never from the clock.
_EVENT_NAMESPACE = uuid.UUID("6f1c1d2e-6a36-4c36-9a7e-2f1f0c7d9b11")


def derived_event_id(run_id: str, *parts: object) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, "/".join([run_id, *map(str, parts)])))


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex[:16]}"


def new_task_id() -> str:
    return f"task_{uuid.uuid4().hex[:16]}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Event(BaseModel):
    """The envelope. Unknown fields are refused: a producer with a newer schema must
    bump `schema_version`, and an old consumer dead-letters what it cannot read."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: Literal[1] = SCHEMA_VERSION
    namespace: str = Field(default="default", min_length=1, max_length=128)
    run_id: str = Field(min_length=1, max_length=128)
    cluster_id: str = Field(min_length=1, max_length=128)
    task_id: str = Field(min_length=1, max_length=128)
    occurred_at: datetime = Field(default_factory=utcnow)


class ExecutionRequested(Event):
    """A client asked for a run. Anyone may publish it (not only the gateway): the
    preparer reads the cluster definition itself, so `cluster_id` and `run_id` are
    all a publisher must know."""

    event_type: Literal["execution.requested"] = "execution.requested"
    options: ExecuteClusterByIdRequest = Field(default_factory=ExecuteClusterByIdRequest)
    requested_by: str | None = None


class ClusteringConfig(BaseModel):
    """What the clusterer and labeler need, resolved once by the preparer from the
    cluster definition and the run's overrides."""

    model_config = ConfigDict(extra="forbid")

    mode: ExecutionMode = ExecutionMode.full
    clustering_method: str
    algorithm_params: dict[str, Any] = Field(default_factory=dict)
    embedding_name: str
    vis_n_components: Literal[2, 3] = 2
    defer_visualization: bool = False
    llm_labeling: LLMLabeling | None = None
    seed: int = 42


class SamplingInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matched: int = Field(ge=0, description="documents that matched the filters")
    sampled: int = Field(ge=0, description="documents in the dataset")
    requested_sample_size: int | None = None
    cap: int | None = Field(default=None, description="the engine's cap for the method, when it applied")
    reason: str | None = None


class DatasetPrepared(Event):
    event_type: Literal["dataset.prepared"] = "dataset.prepared"
    dataset_key: str
    num_points: int = Field(ge=1)
    dimension: int = Field(ge=1)
    config: ClusteringConfig
    sampling: SamplingInfo


class ClusterMetrics(BaseModel):
    silhouette_score: float | None = None
    davies_bouldin_index: float | None = None
    calinski_harabasz_score: float | None = None


class CentroidSummary(BaseModel):
    """A cluster's small summary; the vector itself lives in the centroids parquet."""

    cluster_id: str  # "cl_<n>", noise is "cl_-1"
    num_members: int = Field(ge=0)
    label: str | None = None
    summary: str | None = None
    keywords: list[str] = Field(default_factory=list)


class ResultArtifacts(BaseModel):
    members_key: str
    centroids_key: str
    coords_key: str | None = None


class ExecutionClustered(Event):
    event_type: Literal["execution.clustered"] = "execution.clustered"
    artifacts: ResultArtifacts
    num_clusters: int = Field(ge=0, description="clusters, noise excluded")
    num_points: int = Field(ge=0)
    noise_count: int = Field(default=0, ge=0)
    metrics: ClusterMetrics = Field(default_factory=ClusterMetrics)
    centroids: list[CentroidSummary] = Field(default_factory=list)
    estimator: str | None = None
    algorithm_seconds: float | None = None
    config: ClusteringConfig
    sampling: SamplingInfo | None = None


class ClusterLabel(BaseModel):
    cluster_id: str
    label: str
    summary: str | None = None
    keywords: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ClustersLabeled(Event):
    event_type: Literal["execution.labeled"] = "execution.labeled"
    labels: list[ClusterLabel]
    llm_labeling_errors: list[dict[str, Any]] = Field(default_factory=list)


class RunStatusChanged(Event):
    """A transition of a run, reported by whichever service did the work.

    `progress` is 0..1 over the whole run; the projector never lets it go back.
    Terminal statuses are final: a late PROCESSING report cannot reopen a run.
    """

    event_type: Literal["status.changed"] = "status.changed"
    status: TaskStatusEnum
    service: str
    stage: str | None = None
    progress: float | None = Field(default=None, ge=0, le=1)
    message: str | None = None
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(BaseModel):
    """What a consumer could not process: the reason and the original bytes."""

    model_config = ConfigDict(extra="forbid")

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    consumer_group: str
    reason: str
    error_type: str
    original_value_b64: str
    original_key: str | None = None
    failed_at: datetime = Field(default_factory=utcnow)
