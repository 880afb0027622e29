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

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from contracts.api import (
    DEFAULT_HIERARCHY_DEPTH,
    HierarchyDepth,
    ExecutionMode,
    LayoutStability,
    LayoutStabilityApplied,
    LLMLabeling,
    LogicalOperator,
    TaskStatusEnum,
    TaskType,
)

SCHEMA_VERSION = 1
# RunStatusChanged's version: 2 carries the run's facts in typed fields (sampling,
# clustering_method, labeling_enabled, layout_stability_*, error_traceback) instead of
# `details` keys. The projector reads both versions (version 1's facts from `details`).
STATUS_SCHEMA_VERSION = 2
# The version of the events that name a run's groups of points `group_id` and a composite
# run's sources `source_run_ids` (docs/vocabulary.md): ExecutionRequested, DatasetPrepared,
# ExecutionClustered, ClustersLabeled. Version 1 named them `cluster_id` (and
# `parent_cluster_id`, ...) and `source_execution_ids`; those keys are still read
# (`_renamed`), so version 1 events parse into the same models.
GROUP_SCHEMA_VERSION = 2
# A failed run's traceback rides on its FAILED status event, cut to its last part
# (clusterflow.messaging.short_traceback); the field refuses anything much longer.
TRACEBACK_MAX_CHARS = 4096

# Events derive their ids from the run and what they report, never from the clock.
_EVENT_NAMESPACE = uuid.UUID("6f1c1d2e-6a36-4c36-9a7e-2f1f0c7d9b11")


def derived_event_id(run_id: str, *parts: object) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, "/".join([run_id, *map(str, parts)])))


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex[:16]}"


def new_import_id() -> str:
    return f"imp_{uuid.uuid4().hex[:16]}"


def new_task_id() -> str:
    return f"task_{uuid.uuid4().hex[:16]}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# What an event field named `cluster_id` holds, always (tests/unit/test_vocabulary.py):
# a run's groups of points are `group_id`.
CLUSTER_ID_DOC = ('the cluster definition\'s id ("clust_..."; an import\'s: its collection\'s id), '
                  'never a group of points ("cl_<n>": group_id)')


def _renamed(new: str, old: str, **kwargs: Any) -> Any:
    """A field renamed by GROUP_SCHEMA_VERSION: serialized as `new`, read from `new` or
    from the version 1 key `old`."""
    return Field(validation_alias=AliasChoices(new, old), **kwargs)


class _Wire(BaseModel):
    """What travels inside events. Unknown keys are ignored, not refused: a producer one
    release ahead (a new REST field mapped into RunOptions, a new optional fact) must
    not make every older consumer dead-letter every event it sends during a rolling
    upgrade. A change an older consumer cannot safely ignore (a field renamed, removed,
    or whose meaning changes) bumps the event's `schema_version` instead, and the older
    consumer dead-letters the versions it does not know. (The REST models stay strict:
    a client's typo must be a 422, not silently dropped.)"""

    model_config = ConfigDict(extra="ignore")


class Event(_Wire):
    """The envelope. Unknown fields are ignored (see `_Wire`); an unknown
    `schema_version` is refused, so an old consumer dead-letters what it cannot read."""

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: Literal[1] = SCHEMA_VERSION
    namespace: str = Field(default="default", min_length=1, max_length=128)
    run_id: str = Field(min_length=1, max_length=128)
    cluster_id: str = Field(min_length=1, max_length=128, description=CLUSTER_ID_DOC)
    task_id: str = Field(min_length=1, max_length=128)
    occurred_at: datetime = Field(default_factory=utcnow)


class RunOptions(_Wire):
    """A run's per-execution overrides, as the workers read them: the event's own model,
    not the REST body (`ExecuteClusterByIdRequest`), so the REST surface can grow a field
    without changing what is on the wire. The gateway maps the body into it
    (services/gateway/routes/runs.py `run_options`); anyone else publishing
    `ExecutionRequested` fills it directly. None (or absent): the cluster's own setting.

    Field names, defaults and bounds are the REST body's, so version 1 events (whose
    `options` were that body, serialized) read unchanged: the bytes are the same, and
    `ExecutionRequested` kept schema_version 1. Version 2 renamed `source_execution_ids`
    (the REST body's name) to `source_run_ids`; the old key is still read."""

    mode: ExecutionMode = ExecutionMode.full
    # composite: the runs whose centroids are grouped
    source_run_ids: list[str] | None = _renamed("source_run_ids", "source_execution_ids", default=None)
    assignment_threshold: float | None = Field(default=0.5, ge=0, le=1)  # assign only
    filters: LogicalOperator | None = None  # instead of the cluster's stored filters
    sample_size: int | None = Field(default=None, ge=1, le=1_000_000)
    vis_n_components: Literal[2, 3] | None = None
    defer_visualization: bool | None = None
    llm_labeling: LLMLabeling | None = None
    hierarchical: bool | None = None
    max_hierarchy_depth: HierarchyDepth | None = None
    layout_stability: LayoutStability | None = None


class ExecutionRequested(Event):
    """A client asked for a run. Anyone may publish it (not only the gateway): the
    preparer reads the cluster definition itself, so `cluster_id` and `run_id` are
    all a publisher must know."""

    event_type: Literal["execution.requested"] = "execution.requested"
    schema_version: Literal[1, 2] = GROUP_SCHEMA_VERSION
    options: RunOptions = Field(default_factory=RunOptions)
    requested_by: str | None = None
    # mode=assign: the run whose centroids are used, pinned by the gateway when it
    # accepted the request. None: the preparer takes the cluster's latest completed
    # full run with centroids (what an external publisher gets).
    source_run_id: str | None = None


IMPORT_MODE = "import"  # the `mode` an import's task and read-model row carry


def task_type_for(mode: str | None) -> str:
    """The task type of a run's task: an import is the hosted API's documents-create
    task, every other run a cluster build."""
    return (TaskType.api_collections_documents_create if mode == IMPORT_MODE else TaskType.engine_cluster_build).value


class ImportRequested(Event):
    """Load a parquet file of documents into a collection (`POST /v1/collections/{id}/
    documents/import`). `run_id` is the import's id ("imp_..."), `cluster_id` the
    collection's id (the envelope's key: one collection's imports stay ordered).

    The file is at `source_key` in the bucket: staged there by the gateway from an
    upload (`staged`: deleted once imported), or named by the client."""

    event_type: Literal["import.requested"] = "import.requested"
    collection_id: str = Field(min_length=1, max_length=64)
    source_key: str = Field(min_length=1, max_length=1024)
    staged: bool = False
    id_column: str = "document_id"
    # embedding name -> the column that holds it (a list of floats, or 4·d bytes); None:
    # each declared embedding from the column of its name (clusterflow/imports.py)
    embedding_columns: dict[str, str] | None = None
    # None: every other column goes into the payload
    payload_columns: list[str] | None = None
    requested_by: str | None = None


class ClusteringConfig(_Wire):
    """What the clusterer and labeler need, resolved once by the preparer from the
    cluster definition and the run's overrides."""

    mode: ExecutionMode = ExecutionMode.full
    clustering_method: str
    algorithm_params: dict[str, Any] = Field(default_factory=dict)
    # The hosted SDK's preprocessing_steps (engine_params.validate_preprocessing), in order.
    preprocessing_steps: list[dict[str, Any]] | None = None
    embedding_name: str
    vis_n_components: Literal[2, 3] = 2
    defer_visualization: bool = False
    layout_stability: LayoutStability = LayoutStability.align
    llm_labeling: LLMLabeling | None = None
    seed: int = 42
    # mode=assign: minimum cosine similarity to a centroid, below it a document is noise.
    assignment_threshold: float | None = Field(default=None, ge=0, le=1)
    # mode=full: topics over the run's clusters (always for auto; engine/hierarchy.py).
    hierarchical: bool = False
    max_hierarchy_depth: HierarchyDepth = DEFAULT_HIERARCHY_DEPTH

    @property
    def labeling_enabled(self) -> bool:
        """Whether the run asks for LLM labels."""
        return bool(self.llm_labeling and self.llm_labeling.enabled)

    @property
    def builds_hierarchy(self) -> bool:
        """Whether the run's clusters get topics over them: a full run that asks for it,
        and every auto run (its topics are part of what auto returns; the hosted SDK
        sends `hierarchical: false` whenever a caller leaves it out)."""
        return self.mode is ExecutionMode.full and (self.hierarchical or self.clustering_method == "auto")


class SamplingInfo(_Wire):
    matched: int = Field(ge=0, description="documents that matched the filters")
    sampled: int = Field(ge=0, description="documents in the dataset")
    requested_sample_size: int | None = None
    cap: int | None = Field(default=None, description="the engine's cap for the method, when it applied")
    reason: str | None = None


class ClusterMetrics(BaseModel):
    silhouette_score: float | None = None
    davies_bouldin_index: float | None = None
    calinski_harabasz_score: float | None = None


class RepresentativeDocument(BaseModel):
    """One of a cluster's members nearest its centroid (the hosted SDK's
    `RepresentativeDocument`: it reads `document_id` and `collection_id`)."""

    document_id: str
    similarity: float | None = Field(default=None, description="cosine similarity to the centroid")
    collection_id: str | None = None


class CentroidSummary(BaseModel):
    """A group's small summary (a group of points of the run: docs/vocabulary.md); the
    vector itself lives in the centroids parquet."""

    group_id: str = _renamed("group_id", "cluster_id")  # "cl_<n>", noise is "cl_-1"
    num_members: int = Field(ge=0)
    label: str | None = None
    summary: str | None = None
    keywords: list[str] = Field(default_factory=list)
    # The cluster's identity across the full runs of one cluster definition
    # ("sc_<12 hex>"): kept by the cluster a later run matches to it (services/clusterer/
    # lineage.py), inherited by assign runs. None for noise, composite groups and topics.
    stable_id: str | None = None
    # The run's hierarchy (services/clusterer/engine/hierarchy.py), when it has one: the
    # run's clusters are its leaves; topics over them are further "cl_<n>" entries
    # (numbered after the leaves) with members only through their descendants.
    # hierarchy_level is the depth from the top: 0 for a topic with no parent.
    parent_group_id: str | None = _renamed("parent_group_id", "parent_cluster_id", default=None)
    child_group_ids: list[str] = _renamed("child_group_ids", "child_cluster_ids", default_factory=list)
    hierarchy_level: int | None = None
    # The members' cosine similarity to the cluster's centroid, and the few members
    # nearest it (engine.results.centroid_similarity): full runs (in process or on Ray)
    # and assign runs (to the source run's centroid). None for noise, a hierarchy's
    # topics, composite groups and runs from before these were computed.
    mean_cosine_similarity: float | None = None
    min_cosine_similarity: float | None = None
    representative_ids: list[RepresentativeDocument] | None = None


class SourceRun(_Wire):
    """A completed run that another run builds on: the previous full run (stable ids),
    the run an assign run uses the centroids of, or one source of a composite run.
    Resolved by the preparer from the executions read model."""

    run_id: str
    cluster_id: str = Field(description=CLUSTER_ID_DOC)
    mode: str = "full"
    members_key: str
    centroids_key: str
    num_points: int | None = None
    labeling_enabled: bool = False  # whether its labels came from an LLM
    centroids: list[CentroidSummary] = Field(default_factory=list)


LineageKind = Literal["continued", "split", "merged", "new", "dissolved"]


class LineageEvent(BaseModel):
    """What became of groups between two full runs of one cluster definition (the
    kinds are defined in services/clusterer/lineage.py). `previous_*` name the previous
    run's groups, `current_*` this run's, in the same order as their ids."""

    kind: LineageKind
    previous_group_ids: list[str] = _renamed("previous_group_ids", "previous_cluster_ids", default_factory=list)
    previous_stable_ids: list[str] = Field(default_factory=list)
    current_group_ids: list[str] = _renamed("current_group_ids", "current_cluster_ids", default_factory=list)
    current_stable_ids: list[str] = Field(default_factory=list)
    similarity: float | None = None


class Lineage(BaseModel):
    """A full run's clusters matched to the previous completed full run's."""

    previous_run_id: str | None = None
    basis: Literal["members", "centroids"] | None = None
    shared_documents: int = 0
    events: list[LineageEvent] = Field(default_factory=list)


class SourceClusterGroup(BaseModel):
    """A composite run: one source run's group and the cross-run group it joined."""

    source_run_id: str
    source_group_id: str = _renamed("source_group_id", "source_cluster_id")
    source_stable_id: str | None = None
    label: str | None = None
    num_members: int = Field(ge=0)
    group_id: str = _renamed("group_id", "cluster_id")  # the cross-run group, "cl_<n>" of the composite run
    similarity: float  # cosine similarity of the source centroid to its group's


class ResultArtifacts(BaseModel):
    members_key: str
    centroids_key: str
    coords_key: str | None = None


class DatasetPrepared(Event):
    """The run's manifest is in S3 (`manifest_key`): which rows of which vector segments
    it reads (`clusterflow/segments.py`). Mode by mode (`config.mode`):
    - full: the documents to cluster; `previous` is the cluster's latest completed full
      run, whose clusters this run's are matched to (stable ids);
    - assign: the documents to assign (read block by block); `source` is the run whose
      centroids they go to;
    - composite: the centroids of the `sources` runs, one row each, ids
      "<source run id>/<source group id>".
    """

    event_type: Literal["dataset.prepared"] = "dataset.prepared"
    schema_version: Literal[1, 2] = GROUP_SCHEMA_VERSION
    manifest_key: str
    num_points: int = Field(ge=1)
    dimension: int = Field(ge=1)
    config: ClusteringConfig
    sampling: SamplingInfo
    source: SourceRun | None = None
    sources: list[SourceRun] = Field(default_factory=list)
    previous: SourceRun | None = None


class ComputeLayout(Event):
    """A command: compute a completed run's deferred layout (its visualization
    coordinates) and store it at `coords_key`. The gateway sends it once per run (a
    row in `layout_requests` decides which gateway does); the clusterer computes it,
    in its process or as a Ray job (the gateway never does), and records the outcome
    in that row."""

    event_type: Literal["layout.compute"] = "layout.compute"
    manifest_key: str
    coords_key: str
    num_points: int = Field(ge=0)
    n_components: int = Field(default=2, ge=2, le=3)
    seed: int = 42
    layout_stability: LayoutStability = LayoutStability.align
    # The run whose layout this one keeps the shape of: a full run's previous completed
    # full run (its lineage's), an assign run's source run. None: a fresh layout.
    previous_run_id: str | None = None
    embedding_name: str | None = None  # `transform` reuses only a projection fitted on it


# The run's layout_stability outcome, as `RunStatusChanged.details` keys (a deferred
# layout reports it so) and in the executions read model's details.
LAYOUT_STABILITY_APPLIED = "layout_stability_applied"
LAYOUT_STABILITY_REASON = "layout_stability_reason"
# A failed run's traceback, in the executions read model's details.
ERROR_TRACEBACK = "error_traceback"
# The stage of the clusterer's report of a completed run's deferred layout: the projector
# merges its details into the run, and changes nothing else (the run may have ended).
DEFERRED_LAYOUT_STAGE = "deferred_layout"


class ExecutionClustered(Event):
    event_type: Literal["execution.clustered"] = "execution.clustered"
    schema_version: Literal[1, 2] = GROUP_SCHEMA_VERSION
    artifacts: ResultArtifacts
    num_clusters: int = Field(ge=0, description="clusters, noise excluded")
    num_points: int = Field(ge=0)
    noise_count: int = Field(default=0, ge=0)
    metrics: ClusterMetrics = Field(default_factory=ClusterMetrics)
    # A centroid that carries a label kept it (its stable id's, its source group's):
    # the labeler labels only the others.
    centroids: list[CentroidSummary] = Field(default_factory=list)
    estimator: str | None = None
    algorithm_seconds: float | None = None
    method_choice: dict[str, Any] | None = Field(
        default=None, description='What the engine chose and why: the "auto" method\'s pipeline, criterion and '
        'scores, or an "auto" n_clusters search (criterion, score per k, the pick).')
    config: ClusteringConfig
    sampling: SamplingInfo | None = None
    source_run_id: str | None = None  # assign: the run whose centroids were used
    # composite: its source runs
    source_run_ids: list[str] = _renamed("source_run_ids", "source_execution_ids", default_factory=list)
    lineage: Lineage | None = None  # full: matched to the previous full run
    source_clusters: list[SourceClusterGroup] = Field(default_factory=list)  # composite
    # An inline layout's layout_stability outcome (None: no layout in this run).
    layout_stability_applied: LayoutStability | None = None
    layout_stability_reason: str | None = None


class ClusterLabel(BaseModel):
    group_id: str = _renamed("group_id", "cluster_id")  # "cl_<n>"
    label: str
    summary: str | None = None
    keywords: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ClustersLabeled(Event):
    event_type: Literal["execution.labeled"] = "execution.labeled"
    schema_version: Literal[1, 2] = GROUP_SCHEMA_VERSION
    labels: list[ClusterLabel]
    llm_labeling_errors: list[dict[str, Any]] = Field(default_factory=list)


class RunStatusChanged(Event):
    """A transition of a run, reported by whichever service did the work.

    `progress` is 0..1 over the whole run; the projector never lets it go back.
    Terminal statuses are final: a late PROCESSING report cannot reopen a run.

    The facts a report establishes about the run have typed fields (None: not reported
    by this transition); `details` carries the rest (an import's result, labeling
    statistics, a stall), merged into the run's details by the projector. Version 1
    events carried the typed facts as `details` keys of the same names; the projector
    still reads them there.
    """

    event_type: Literal["status.changed"] = "status.changed"
    schema_version: Literal[1, 2] = STATUS_SCHEMA_VERSION
    status: TaskStatusEnum
    service: str
    stage: str | None = None
    progress: float | None = Field(default=None, ge=0, le=1)
    message: str | None = None
    error: str | None = None
    # A FAILED run's traceback, its last frames (clusterflow.messaging.short_traceback).
    error_traceback: str | None = Field(default=None, max_length=2 * TRACEBACK_MAX_CHARS)
    # The preparer's, once the dataset is ready.
    sampling: SamplingInfo | None = None
    clustering_method: str | None = None
    labeling_enabled: bool | None = None
    # A deferred layout's layout_stability outcome (stage DEFERRED_LAYOUT_STAGE).
    layout_stability_applied: LayoutStabilityApplied | None = None
    layout_stability_reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """The typed facts this report carries (JSON values), over the `details` keys
        of a version 1 event that carried them there."""
        typed = {name: getattr(self, name) for name in STATUS_FACTS if getattr(self, name) is not None}
        return {**{k: v for k, v in self.details.items() if k in STATUS_FACTS},
                **{k: v.model_dump() if isinstance(v, BaseModel) else getattr(v, "value", v)
                   for k, v in typed.items()}}

    def extra_details(self) -> dict[str, Any]:
        """`details` without the typed facts a version 1 event carried there."""
        return {k: v for k, v in self.details.items() if k not in STATUS_FACTS}


# RunStatusChanged's typed facts: their field names, also their keys in the run's
# details (and so in the task's additional_data).
STATUS_FACTS = ("sampling", "clustering_method", "labeling_enabled", "layout_stability_applied",
                "layout_stability_reason", "error_traceback")


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
