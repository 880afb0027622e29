"""REST bodies of clusterflow's own resources: collections, documents, clusters and
executions (the parts of the hosted API that `clusters-api-surface.md` lists and the
execute contract does not define). Shared by the gateway and the Python client."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.api import (
    DEFAULT_HIERARCHY_DEPTH,
    HierarchyDepth,
    LayoutStability,
    LLMLabeling,
    LogicalOperator,
    TaskStatusEnum,
)
from contracts.events import CentroidSummary, ClusterMetrics, Lineage, SamplingInfo, SourceClusterGroup

MAX_DIMENSION = 8192
NAME = Field(min_length=1, max_length=256)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pagination(BaseModel):
    limit: int
    offset: int
    total: int


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

class CreateClusterRequest(_Request):
    collection_ids: list[str] = Field(min_length=1, max_length=100)
    cluster_name: str = NAME
    description: str | None = Field(default=None, max_length=4096)
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
    metadata: dict[str, Any] = Field(default_factory=dict)


class PatchClusterRequest(_Request):
    """Name, description and metadata only; the clustering definition is immutable so
    that every run of a cluster stays comparable (create a new cluster instead)."""

    cluster_name: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    metadata: dict[str, Any] | None = None


class Cluster(BaseModel):
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


class SortSpec(_Request):
    field: str = "created_at"
    direction: Literal["asc", "desc"] = "desc"


class ListClustersRequest(_Request):
    filters: dict[str, Any] | None = Field(
        default=None, description="Exact matches on cluster_name, clustering_method or collection_id."
    )
    sort: SortSpec = Field(default_factory=SortSpec)
    search: str | None = Field(default=None, max_length=256, description="Substring of the cluster name.")


class ClusterList(BaseModel):
    results: list[Cluster]
    pagination: Pagination
    total_count: int
    stats: dict[str, Any]


# --- executions -------------------------------------------------------------------------

class ClusterExecutionResult(BaseModel):
    run_id: str
    cluster_id: str
    task_id: str
    status: TaskStatusEnum
    mode: str = "full"
    clustering_method: str | None = None
    num_clusters: int | None = None
    num_points: int | None = None
    noise_count: int | None = None
    stage: str | None = None
    progress: float = 0.0
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    metrics: ClusterMetrics | None = None
    centroids: list[CentroidSummary] = Field(default_factory=list)
    sampling: SamplingInfo | None = None
    llm_labeling_errors: list[dict[str, Any]] = Field(default_factory=list)
    source_run_id: str | None = Field(
        default=None, description="mode=assign: the completed full run whose centroids the documents went to.")
    source_execution_ids: list[str] | None = Field(
        default=None, description="mode=composite: the runs whose centroids were grouped.")
    source_clusters: list[SourceClusterGroup] | None = Field(
        default=None, description="mode=composite: every source run's cluster and the group (cluster_id) it joined.")
    lineage: Lineage | None = Field(
        default=None, description="mode=full: this run's clusters matched to the previous completed full run's "
        "(continued, split, merged, new, dissolved); centroids carry the stable ids.")
    layout_stability_applied: LayoutStability | None = Field(
        default=None, description="What kept this run's map in the previous run's shape: align, transform, or "
        "none (a fresh layout); null while the run has no layout (deferred and not yet computed).")
    layout_stability_reason: str | None = Field(
        default=None, description="Why: the run aligned to and on how many shared documents, or why the asked "
        "setting fell back.")


class ListExecutionsRequest(_Request):
    status: list[TaskStatusEnum] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    min_num_clusters: int | None = Field(default=None, ge=0)
    max_num_clusters: int | None = Field(default=None, ge=0)
    min_silhouette_score: float | None = Field(default=None, ge=-1, le=1)
    sort: SortSpec = Field(default_factory=SortSpec)


class ExecutionList(BaseModel):
    results: list[ClusterExecutionResult]
    pagination: Pagination
    total_count: int
    stats: dict[str, Any]


class ExecutionDataRequest(_Request):
    include_centroids: bool = True
    include_members: bool = False
    include_centroid_vectors: bool = False
    cluster_id: str | None = Field(default=None, description="Only members of this cluster, e.g. 'cl_0' "
                                      "(of a hierarchy's topic: the members of the clusters under it).")
    offset: int = Field(default=0, ge=0, le=2_147_483_647)
    limit: int = Field(default=1000, ge=1, le=10_000)


class CentroidData(CentroidSummary):
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
