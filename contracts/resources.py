"""REST bodies of clusterflow's own resources: collections, documents, clusters and
executions (the parts of the hosted API that `clusters-api-surface.md` lists and the
execute contract does not define). Shared by the gateway and the Python client."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.api import (
    DEFAULT_HIERARCHY_DEPTH,
    HierarchyDepth,
    LayoutStability,
    LayoutStabilityApplied,
    LLMLabeling,
    LogicalOperator,
    TaskResponse,
    TaskStatusEnum,
)
from contracts import events
from contracts.events import ClusterMetrics, LineageKind, RepresentativeDocument, SamplingInfo

MAX_DIMENSION = 8192
NAME = Field(min_length=1, max_length=256)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    """A body the hosted SDK sends: unknown keys are ignored and named back in the
    answer's `warnings` (what the hosted API does), see `unknown_keys`."""

    model_config = ConfigDict(extra="allow")


def unknown_keys(model: BaseModel, prefix: str = "") -> list[str]:
    """The dotted paths of every key a lenient model (and those nested in it) ignored."""
    found = [f"{prefix}{key}" for key in (model.model_extra or {})] if isinstance(model, _Lenient) else []
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, BaseModel):
            found += unknown_keys(value, f"{prefix}{name}.")
    return found


class Pagination(BaseModel):
    """Offset paging with the hosted API's page fields. `page` is 1-based
    (`offset // page_size + 1`); `next_cursor` is the opaque cursor of the next page
    (null on the last), accepted back as the `cursor` query parameter."""

    limit: int
    offset: int
    total: int
    page: int = 1
    page_size: int = 0
    total_pages: int = 0
    next_cursor: str | None = None

    @classmethod
    def of(cls, limit: int, offset: int, total: int) -> Pagination:
        return cls(limit=limit, offset=offset, total=total, page=offset // limit + 1, page_size=limit,
                   total_pages=-(-total // limit), next_cursor=str(offset + limit) if offset + limit < total else None)


# --- collections and documents ---------------------------------------------------------

class CreateCollectionRequest(_Request):
    collection_name: str = NAME
    description: str | None = Field(default=None, max_length=4096)
    embeddings: dict[str, int] = Field(
        min_length=1,
        description="Named embeddings every document carries, with their dimension, e.g. {'text': 384}.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("embeddings")
    @classmethod
    def _dimensions(cls, value: dict[str, int]) -> dict[str, int]:
        for name, dim in value.items():
            if not name or len(name) > 128:
                raise ValueError("embedding names must be 1 to 128 characters")
            if not 1 <= dim <= MAX_DIMENSION:
                raise ValueError(f"embedding {name!r}: dimension must be 1..{MAX_DIMENSION} (got {dim})")
        return value


class Collection(BaseModel):
    collection_id: str
    namespace: str
    collection_name: str
    description: str | None = None
    embeddings: dict[str, int]
    metadata: dict[str, Any] = Field(default_factory=dict)
    document_count: int = 0
    created_at: datetime


class DocumentIn(_Request):
    document_id: str = NAME
    payload: dict[str, Any] = Field(default_factory=dict)
    embeddings: dict[str, list[float]] = Field(min_length=1)


class UpsertDocumentsRequest(_Request):
    documents: list[DocumentIn] = Field(min_length=1, max_length=10_000)


class UpsertDocumentsResponse(BaseModel):
    collection_id: str
    upserted: int


class BYODocument(_Lenient):
    """A document in the hosted SDK's bring-your-own shape: named dense `vectors` (the
    collection's embeddings) and a `payload`; `metadata`, when given, is stored in the
    payload under "metadata". Other keys (lineage, acl) are ignored and named in the
    answer's warnings."""

    document_id: str = NAME
    vectors: dict[str, list[float]] = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] | None = None


class BYOUpsertRequest(_Lenient):
    collection_id: str | None = Field(
        default=None, description="The collection; may be left out when the namespace has exactly one.")
    documents: list[BYODocument] = Field(min_length=1, max_length=10_000)
    options: dict[str, Any] | None = None


class BYOUpsertResponse(BaseModel):
    inserted: int
    document_ids: list[str]
    collection_id: str
    warnings: list[str] = Field(default_factory=list)


class ImportDocumentsRequest(_Request):
    """A parquet file already in the bucket, imported into the collection. (To upload
    the file in the request instead, send it as the body with `Content-Type:
    application/vnd.apache.parquet` and these fields as query parameters.)"""

    s3_key: str = Field(min_length=1, max_length=1024, description="The file's key in clusterflow's bucket.")
    id_column: str = Field(default="document_id", min_length=1, max_length=256)
    embedding_columns: dict[str, str] | None = Field(
        default=None, description="Embedding name -> column. Default: each of the collection's embeddings from "
        "the column of the same name (or, for a collection with one embedding, a column named 'embedding' or "
        "'vector').")
    payload_columns: list[str] | None = Field(
        default=None, description="Columns copied into each document's payload. Default: every other column.")


class ImportBadRow(BaseModel):
    row: int = Field(description="0-based row number in the file")
    document_id: str | None = None
    reason: str


class ImportResult(BaseModel):
    """What an import did: the task's `additional_data.import` once it ends."""

    rows: int
    imported: int
    bad_row_count: int
    bad_rows: list[ImportBadRow] = Field(description="The first 1,000 bad rows, by row number")
    segments: int
    seconds: float


class Document(BaseModel):
    document_id: str
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class DocumentPage(BaseModel):
    results: list[Document]
    pagination: Pagination


# --- clusters ---------------------------------------------------------------------------

class VectorConfig(_Lenient):
    """The hosted SDK's `VectorBasedConfigInput`: which embedding and how to cluster it.

    `feature_uris[0]` (or the deprecated `feature_uri`) names the embedding, as a bare
    name or as `mixpeek://extractor@version/output`, whose last segment is the name.
    The SDK sends every knob at its default; knobs that name something clusterflow
    does not do are accepted at their default and refused (400, naming the field)
    otherwise (`services/gateway/validation.py`)."""

    feature_uri: str | None = None
    feature_uris: list[str] | None = Field(default=None, min_length=1, max_length=1)
    feature_extractor_name: str | None = None
    version: str | None = None
    output_name: str | None = None
    clustering_method: str = "auto"
    sample_size: int | None = Field(default=None, ge=1, le=1_000_000)
    algorithm_params: dict[str, Any] | None = None
    kmeans_parameters: dict[str, Any] | None = None
    dbscan_parameters: dict[str, Any] | None = None
    hdbscan_parameters: dict[str, Any] | None = None
    multi_feature_strategy: str | None = "concatenate"
    normalize_features: bool | None = True
    feature_weights: dict[str, float] | None = None
    weight_learning_config: dict[str, Any] | None = None
    output_strategy: str | None = "single"
    effective_feature_method: str | None = "mean"
    enrich_source: bool | None = False
    face_cluster_merge: dict[str, Any] | None = None
    preprocessing_steps: list[Any] | None = None
    hierarchical: bool | None = False
    max_hierarchy_depth: HierarchyDepth | None = DEFAULT_HIERARCHY_DEPTH
    vis_n_components: Literal[2, 3] | None = 2
    layout_stability: LayoutStability | None = None
    defer_visualization: bool | None = False

    def embedding(self) -> str | None:
        """The embedding's name, from the feature URI (its last path segment)."""
        uri = (self.feature_uris or [None])[0] or self.feature_uri or self.output_name
        if uri is None:
            return None
        return uri.rstrip("/").rsplit("/", 1)[-1] if "://" in uri else uri


# Flat fields clusterflow has always taken; `vector_config` carries the same, nested.
FLAT_CONFIG_FIELDS = ("embedding_name", "clustering_method", "algorithm_params", "sample_size",
                      "vis_n_components", "defer_visualization", "preprocessing_steps", "hierarchical",
                      "max_hierarchy_depth", "layout_stability")


class CreateClusterRequest(_Lenient):
    """A cluster definition: clusterflow's flat fields, or the hosted SDK's
    `CreateClusterRequest` with a nested `vector_config` (not both)."""

    collection_ids: list[str] = Field(min_length=1, max_length=100)
    cluster_name: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="Optional; a name is generated from the cluster id when absent.")
    description: str | None = Field(default=None, max_length=4096)
    cluster_type: Literal["vector", "attribute"] = Field(
        default="vector", description='"vector" only: attribute clustering is not supported yet (400).')
    vector_config: VectorConfig | None = None
    attribute_config: dict[str, Any] | None = None
    embedding_name: str | None = Field(
        default=None,
        description="Which named embedding to cluster; may be omitted when the collections have exactly one.",
    )
    clustering_method: str = Field(
        default="auto",
        description='One of auto (the default: needs no k), kmeans, dbscan, hdbscan, agglomerative, spectral, '
        'gaussian_mixture, mean_shift, optics, leiden, evoc.')
    algorithm_params: dict[str, Any] = Field(default_factory=dict)
    preprocessing_steps: list[dict[str, Any]] | None = Field(
        default=None,
        description='The hosted SDK\'s ordered steps applied to the vectors before clustering, each '
        '{"method": "whitening" | "umap" | "none", ...its parameters}; when set they replace the engine\'s own '
        'reduction. Runs with steps are computed in the clusterer\'s process, not on Ray.')
    sample_size: int | None = Field(default=None, ge=1, le=1_000_000)
    filters: LogicalOperator | None = None
    llm_labeling: LLMLabeling | None = None
    vis_n_components: Literal[2, 3] = 2
    defer_visualization: bool = False
    hierarchical: bool = Field(
        default=False, description="Also build topics over each run's clusters (auto runs always do): "
        "centroids then carry parent_cluster_id, child_cluster_ids and hierarchy_level.")
    max_hierarchy_depth: HierarchyDepth = Field(
        default=DEFAULT_HIERARCHY_DEPTH, description="The most levels of the hierarchy, the run's clusters "
        "included (2 to 5; 2 is topics and their subtopics).")
    layout_stability: LayoutStability = Field(
        default=LayoutStability.align,
        description="How each run's map keeps the previous run's shape: align (default), transform or none; "
        "a run may override it.")
    metadata: dict[str, Any] | None = Field(default_factory=dict)
    # The SDK always sends these at their defaults; other values are a 400.
    enrich_source_collection: bool | None = False
    source_enrichment_config: dict[str, Any] | None = None
    auto_execute_on_batch: bool | None = False
    auto_execute_min_documents: int | None = None
    auto_execute_cooldown_seconds: int | None = 3600
    source_cluster_ids: list[str] | None = None


class PatchClusterRequest(_Lenient):
    """Name, description and metadata, and (as the hosted API allows) the run
    configuration: `filters`, `sample_size`, `algorithm_params`, `llm_labeling`,
    `layout_stability`. A change applies to runs executed after it; past runs keep the
    configuration they ran with (their task's `inputs` record it)."""

    cluster_name: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    metadata: dict[str, Any] | None = None
    filters: LogicalOperator | None = None
    sample_size: int | None = Field(default=None, ge=1, le=1_000_000)
    algorithm_params: dict[str, Any] | None = None
    llm_labeling: LLMLabeling | None = None
    layout_stability: LayoutStability | None = None
    face_cluster_merge: dict[str, Any] | None = None
    source_cluster_ids: list[str] | None = None


class Cluster(BaseModel):
    """A cluster definition; also the hosted SDK's `ClusterMetadata`/`ClusterModel`
    (`namespace_id`, `input_collections`, `cluster_type`, `algorithm`, `feature_uris`,
    `vector_config`, `status` and `last_execution_task_id` repeat clusterflow's own
    fields under the hosted names)."""

    cluster_id: str
    namespace: str
    cluster_name: str
    description: str | None = None
    collection_ids: list[str]
    embedding_name: str
    clustering_method: str
    algorithm_params: dict[str, Any]
    preprocessing_steps: list[dict[str, Any]] | None = None
    sample_size: int | None = None
    filters: dict[str, Any] | None = None
    llm_labeling: dict[str, Any] | None = None
    vis_n_components: int = 2
    defer_visualization: bool = False
    hierarchical: bool = False
    max_hierarchy_depth: int = DEFAULT_HIERARCHY_DEPTH
    layout_stability: LayoutStability = LayoutStability.align
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    last_run_id: str | None = None
    last_execution_status: TaskStatusEnum | None = None
    namespace_id: str
    input_collections: list[str]
    cluster_type: Literal["vector"] = "vector"
    algorithm: str
    feature_uris: list[str]
    vector_config: dict[str, Any]
    status: TaskStatusEnum | None = Field(default=None, description="The latest run's task status.")
    last_execution_task_id: str | None = None
    warnings: list[str] = Field(
        default_factory=list, description="Keys of the request that were ignored (create and patch answers).")

    @model_validator(mode="before")
    @classmethod
    def _hosted_names(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "namespace_id" in data:
            return data
        return {
            **data,
            "namespace_id": data["namespace"],
            "input_collections": list(data["collection_ids"]),
            "algorithm": data["clustering_method"],
            "feature_uris": [data["embedding_name"]],
            "vector_config": {
                "feature_uris": [data["embedding_name"]], "clustering_method": data["clustering_method"],
                "algorithm_params": data.get("algorithm_params") or {}, "sample_size": data.get("sample_size"),
                "vis_n_components": data.get("vis_n_components", 2),
                "defer_visualization": data.get("defer_visualization", False),
            },
            "status": data.get("last_execution_status"),
        }


class SortSpec(_Lenient):
    field: str = "created_at"
    direction: Literal["asc", "desc"] = "desc"


class ListClustersRequest(_Lenient):
    limit: int | None = Field(default=None, ge=1, le=1000)
    page_size: int | None = Field(default=None, ge=1, le=1000)
    offset: int | None = Field(default=None, ge=0, le=2_147_483_647)
    page: int | None = Field(default=None, ge=1, le=2_147_483_647)
    filters: dict[str, Any] | None = Field(
        default=None, description="A LogicalOperator (nested AND/OR/NOT, `{field: value}` shorthand) over "
        "cluster_id, cluster_name, description, clustering_method, embedding_name, collection_id (one of the "
        "cluster's collections), created_at, updated_at; an unknown field or an operator the field does not "
        "take is a 400 naming what it allows."
    )
    sort: SortSpec = Field(default_factory=SortSpec)
    search: str | None = Field(default=None, max_length=256,
                               description="Case-insensitive substring of the cluster name or description.")


class ClusterList(BaseModel):
    results: list[Cluster]
    pagination: Pagination
    total_count: int
    stats: dict[str, Any]
    warnings: list[str] = Field(default_factory=list, description="Keys of the request body that were ignored.")


# --- executions -------------------------------------------------------------------------

ExecutionStatus = Literal["pending", "processing", "completed", "failed", "canceled"]

# A run's task status (UPPERCASE, the execute contract's) as the hosted SDK's
# ClusterExecutionResult spells it.
EXECUTION_STATUS: dict[str, str] = {
    "PENDING": "pending", "QUEUED": "pending", "IN_PROGRESS": "processing", "PROCESSING": "processing",
    "COMPLETED": "completed", "COMPLETED_WITH_ERRORS": "completed", "FAILED": "failed", "CANCELED": "canceled",
    "INTERRUPTED": "failed",
}


class ExecutionMetrics(ClusterMetrics):
    """The engine's scores, and the shape of the partition (from the cluster sizes)."""

    noise_ratio: float | None = None
    avg_cluster_size: float | None = None
    cluster_size_entropy: float | None = Field(
        default=None, description="Shannon entropy (nats) of the cluster sizes, noise excluded.")
    degenerate: bool | None = Field(
        default=None, description="True when the run found fewer than 2 clusters, or one holds over 90 % of them.")
    degenerate_detail: str | None = None


    @classmethod
    def of(cls, scores: dict[str, Any], centroids: list[dict[str, Any]], noise: int | None,
           total: int) -> ExecutionMetrics:
        """The engine's scores, and the shape of the partition from its cluster sizes."""
        import math

        sizes = [c["num_members"] for c in centroids if c["cluster_id"] != "cl_-1"]
        if noise is None:
            noise = sum(c["num_members"] for c in centroids if c["cluster_id"] == "cl_-1")
        clustered = sum(sizes)
        shape: dict[str, Any] = {"noise_ratio": noise / total if total else None,
                                 "avg_cluster_size": clustered / len(sizes) if sizes else None}
        if clustered:
            shape["cluster_size_entropy"] = -sum(n / clustered * math.log(n / clustered) for n in sizes if n)
        if sizes:
            largest = max(sizes) / clustered if clustered else 0.0
            detail = (f"{len(sizes)} cluster" if len(sizes) < 2 else
                      f"the largest cluster holds {largest:.0%} of the clustered points" if largest > 0.9 else None)
            shape |= {"degenerate": detail is not None, "degenerate_detail": detail}
        return cls(**{k: scores.get(k) for k in ClusterMetrics.model_fields}, **shape)


# A run's groups of points at the REST edge. The events name them `group_id`
# (contracts/events.py); the hosted API, its SDK and the executions read model's rows
# `cluster_id` (docs/vocabulary.md). These models are the REST side, built from the read
# model's rows, which the projector wrote with these names (clusterflow/readmodel.py
# `stored`); the OpenAPI names are the ones they had when they were the events' models.


class ExecutionCentroid(BaseModel):
    """A run's group as the executions endpoints answer it (the SDK's
    `ClusterExecutionCentroid`): `events.CentroidSummary` under the hosted API's names;
    the cosine statistics and representatives come from the clusterer."""

    cluster_id: str  # "cl_<n>", noise is "cl_-1"
    num_members: int = Field(ge=0)
    label: str | None = None
    summary: str | None = None
    keywords: list[str] = Field(default_factory=list)
    stable_id: str | None = None
    parent_cluster_id: str | None = None
    child_cluster_ids: list[str] = Field(default_factory=list)
    hierarchy_level: int | None = None
    mean_cosine_similarity: float | None = None
    min_cosine_similarity: float | None = None
    representative_ids: list[RepresentativeDocument] | None = None


class LineageEvent(BaseModel):
    """`events.LineageEvent` under the hosted API's names: what became of the previous
    run's clusters (`previous_*`) in this run (`current_*`)."""

    kind: LineageKind
    previous_cluster_ids: list[str] = Field(default_factory=list)
    previous_stable_ids: list[str] = Field(default_factory=list)
    current_cluster_ids: list[str] = Field(default_factory=list)
    current_stable_ids: list[str] = Field(default_factory=list)
    similarity: float | None = None


class Lineage(events.Lineage):
    """A full run's clusters matched to the previous completed full run's."""

    events: list[LineageEvent] = Field(default_factory=list)  # type: ignore[assignment] - the REST names


class SourceClusterGroup(BaseModel):
    """A composite run: one source run's cluster and the cross-run group (`cluster_id`)
    it joined (`events.SourceClusterGroup` under the hosted API's names)."""

    source_run_id: str
    source_cluster_id: str
    source_stable_id: str | None = None
    label: str | None = None
    num_members: int = Field(ge=0)
    cluster_id: str  # the group, "cl_<n>" of the composite run
    similarity: float  # cosine similarity of the source centroid to its group's


class ClusterExecutionResult(BaseModel):
    """A run; also the hosted SDK's `ClusterExecutionResult`: `status` in its lowercase
    values (`task_status` keeps the task's UPPERCASE status), integer counts, input
    reconciliation, the run's name and label overrides."""

    run_id: str
    cluster_id: str
    task_id: str
    status: ExecutionStatus
    task_status: TaskStatusEnum
    mode: str = "full"
    clustering_method: str | None = None
    num_clusters: int = 0
    num_points: int = 0
    noise_count: int | None = None
    stage: str | None = None
    progress: float = 0.0
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    error_traceback: str | None = Field(
        default=None, description="The failing service's last error lines, when a run failed.")
    metrics: ExecutionMetrics | None = None
    centroids: list[ExecutionCentroid] = Field(default_factory=list)
    sampling: SamplingInfo | None = None
    llm_labeling_errors: list[str] = Field(default_factory=list, description="One line per cluster whose "
                                           "LLM label failed; `llm_labeling_error_details` has them as objects.")
    llm_labeling_error_details: list[dict[str, Any]] = Field(default_factory=list)
    source_documents: int | None = Field(default=None, description="Documents the run's selection matched.")
    vectors_retrieved: int | None = Field(default=None, description="Of those, the vectors the run read.")
    vectors_clustered: int | None = Field(default=None, description="Points the engine clustered.")
    index_gap: int | None = Field(default=None, description="source_documents - vectors_retrieved.")
    pipeline_drop: int | None = Field(default=None, description="vectors_retrieved - vectors_clustered.")
    input_reconciliation_ok: bool | None = None
    input_reconciliation_reasons: list[str] = Field(default_factory=list)
    member_counts_stale: bool = Field(
        default=False, description="Always false: a run's members are fixed when it ends.")
    run_name: str | None = None
    label_overrides: dict[str, str] = Field(default_factory=dict, description="cluster id -> label set by PATCH "
                                            ".../labels; the centroids' labels already show them.")
    source_run_id: str | None = Field(
        default=None, description="mode=assign: the completed full run whose centroids the documents went to.")
    source_execution_ids: list[str] | None = Field(
        default=None, description="mode=composite: the runs whose centroids were grouped.")
    source_clusters: list[SourceClusterGroup] | None = Field(
        default=None, description="mode=composite: every source run's cluster and the group (cluster_id) it joined.")
    lineage: Lineage | None = Field(
        default=None, description="mode=full: this run's clusters matched to the previous completed full run's "
        "(continued, split, merged, new, dissolved); centroids carry the stable ids.")
    layout_stability_applied: LayoutStabilityApplied | None = Field(
        default=None, description="What kept this run's map in the previous run's shape: aligned, transform, or "
        "none (a fresh layout); null while the run has no layout (deferred and not yet computed).")
    layout_stability_reason: str | None = Field(
        default=None, description="Why: the run aligned to and on how many shared documents, or why the asked "
        "setting fell back.")


class ListExecutionsRequest(_Lenient):
    status: list[TaskStatusEnum | ExecutionStatus] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    min_num_clusters: int | None = Field(default=None, ge=0)
    max_num_clusters: int | None = Field(default=None, ge=0)
    min_silhouette_score: float | None = Field(default=None, ge=-1, le=1)
    filters: dict[str, Any] | None = Field(
        default=None, description="A LogicalOperator (nested AND/OR/NOT) over run_id, task_id, run_name, status "
        "(a lowercase execution status stands for every task status it covers), mode, clustering_method, "
        "error_message, num_clusters, num_points, noise_count, metrics.silhouette_score, "
        "metrics.davies_bouldin_index, metrics.calinski_harabasz_score, created_at, started_at, completed_at.")
    sort: SortSpec = Field(default_factory=SortSpec)
    search: str | None = Field(default=None, max_length=256,
                               description="Case-insensitive substring of the run's name, id or status.")


class ExecutionList(BaseModel):
    results: list[ClusterExecutionResult]
    pagination: Pagination
    total_count: int
    stats: dict[str, Any]
    warnings: list[str] = Field(default_factory=list, description="Keys of the request body that were ignored.")


class ClusterGroup(BaseModel):
    cluster_id: str
    label: str | None = None
    summary: str | None = None
    keywords: list[str] = Field(default_factory=list)
    member_count: int


class ClusterGroupsResponse(BaseModel):
    """`GET /v1/clusters/{id}/groups`: the groups of the cluster's latest completed run."""

    cluster_id: str
    run_id: str | None = None
    total_groups: int
    total_documents: int
    member_counts_stale: bool = False
    groups: list[ClusterGroup]


ExportFormat = Literal["parquet", "csv"]


class PatchExecutionLabelsRequest(_Request):
    labels: dict[str, Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=10_000, description="cluster id (e.g. 'cl_0') -> the label it shows from now on.")


class PatchExecutionLabelsResponse(BaseModel):
    cluster_id: str
    run_id: str
    label_overrides: dict[str, str]


class PatchExecutionRunNameRequest(_Request):
    run_name: str = Field(min_length=1, max_length=120)


class PatchExecutionRunNameResponse(BaseModel):
    cluster_id: str
    run_id: str
    run_name: str


class ListTasksRequest(_Lenient):
    status: TaskStatusEnum | None = None
    task_type: str | None = Field(default=None, max_length=64)
    filters: dict[str, Any] | None = Field(
        default=None, description="A LogicalOperator (nested AND/OR/NOT) over task_id, status, task_type, "
        "run_id, cluster_id, progress, created_at, updated_at.")
    sort: SortSpec = Field(default_factory=SortSpec)
    search: str | None = Field(default=None, max_length=256,
                               description="Case-insensitive substring of the task's id, status or type.")


class KillTaskResponse(TaskResponse):
    """`DELETE /v1/tasks/{id}`: the task, and the hosted SDK's GenericDeleteResponse fields."""

    success: bool = True
    message: str


class TaskList(BaseModel):
    results: list[TaskResponse]
    pagination: Pagination
    warnings: list[str] = Field(default_factory=list, description="Keys of the request body that were ignored.")


class ExecutionDataRequest(_Request):
    include_centroids: bool = True
    include_members: bool = False
    include_centroid_vectors: bool = False
    cluster_id: str | None = Field(default=None, description="Only members of this cluster, e.g. 'cl_0' "
                                      "(of a hierarchy's topic: the members of the clusters under it).")
    offset: int = Field(default=0, ge=0, le=2_147_483_647)
    limit: int = Field(default=1000, ge=1, le=10_000)


class CentroidData(ExecutionCentroid):
    centroid_vector: list[float] | None = None


class MemberData(BaseModel):
    document_id: str
    cluster_id: str
    distance_to_centroid: float | None = None
    similarity: float | None = Field(default=None, description="assign runs: cosine similarity to the centroid.")
    source_run_id: str | None = Field(default=None, description="composite runs: the run the member comes from.")
    source_cluster_id: str | None = Field(default=None, description="composite runs: its cluster in that run.")
    assigned: bool | None = Field(
        default=None, description="auto and the noise policies: true for a member put in its cluster by "
        "nearest centroid (a merged small community, a point outside auto's sample, reassigned noise), "
        "false for a core member; null for methods that assign nothing.")
    x: float | None = None
    y: float | None = None
    z: float | None = None


class ExecutionData(BaseModel):
    run_id: str
    cluster_id: str
    centroids: list[CentroidData] | None = None
    members: list[MemberData] | None = None
    pagination: Pagination | None = None


class VisualizationPoint(BaseModel):
    document_id: str
    cluster_id: str
    label: str | None = None
    x: float
    y: float
    z: float | None = None


class Visualization(BaseModel):
    """A run's layout, paged. A deferred layout not computed yet is answered at once
    with HTTP 202, `status: "computing"`, no points, and `retry_after_s`: poll the same
    URL (the `Retry-After` header says when) until `status` is `"ready"` (200 with the
    points); `"failed"` carries the error, and the next call asks for it again."""

    run_id: str
    cluster_id: str
    n_components: int
    computed_now: bool = Field(description="True when this call asked the engine to compute the deferred layout.")
    points: list[VisualizationPoint]
    pagination: Pagination
    status: Literal["ready", "computing", "failed"] = Field(
        default="ready", description="ready: the points are here; computing: the clusterer is computing the "
        "deferred layout, poll this URL again; failed: see `error`.")
    error: str | None = None
    retry_after_s: float | None = Field(default=None, description="While computing: when to poll again.")


# --- enrichment -------------------------------------------------------------------------

class EnrichRequest(_Request):
    """POST /v1/clusters/enrich: write runs' cluster assignments onto documents."""

    clustering_ids: list[str] = Field(
        min_length=1, max_length=20,
        description="Run ids (completed) whose members are written; a document in several runs gets the "
        "values of the last run listed.")
    source_collection_id: str = Field(description="The collection whose documents are enriched.")
    target_collection_id: str | None = Field(
        default=None,
        description="When given, the enriched documents (payload and vectors) are copied into this collection "
        "and the source is left unchanged; else the source documents are updated in place.")
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    parallelism: int = Field(default=1, ge=1, le=8)


class EnrichResponse(BaseModel):
    processed: int = Field(description="Members read from the runs (one per document).")
    enriched: int = Field(description="Documents written.")
    failed: int = Field(description="Members whose document is not in the source collection, or whose batch failed.")
    batches: int
    errors: list[str] = Field(default_factory=list, description="The first errors, when batches failed.")
