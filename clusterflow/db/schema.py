"""The relational schema, as SQLAlchemy Core tables. Alembic migrations create it.

Ownership follows ARCHITECTURE.md: the gateway writes collections, documents,
vectors, clusters and run requests; the status projector alone writes tasks,
executions and run_events; every consumer records what it processed in
`processed_events` (idempotency).
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()


def _created() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Column:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


collections = Table(
    "collections",
    metadata,
    Column("collection_id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("collection_name", String(256), nullable=False),
    Column("description", Text),
    # {"<embedding name>": <dimension>}: every document's vector of that name has it.
    Column("embeddings", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    _created(),
    Index("ix_collections_ns_name", "namespace", "collection_name", unique=True),
)

documents = Table(
    "documents",
    metadata,
    Column("collection_id", String(64), nullable=False),
    Column("document_id", String(256), nullable=False),
    Column("payload", JSONB, nullable=False, server_default="{}"),
    _created(),
    _updated(),
    PrimaryKeyConstraint("collection_id", "document_id"),
    ForeignKeyConstraint(["collection_id"], ["collections.collection_id"], ondelete="CASCADE"),
)

# Each document's live vector (packed little-endian float32) and where runs read it
# (clusterflow/segments.py): a row of a sealed segment in S3 (`segment_id`,
# `segment_row`), or nowhere yet (the unsealed tail, `segment_id` NULL). Every upsert
# takes a new `version` and goes back to the tail. The bytes stay here too: Postgres is
# the source of truth a lost segment is sealed again from; runs never copy them out.
document_vectors = Table(
    "document_vectors",
    metadata,
    Column("collection_id", String(64), nullable=False),
    Column("document_id", String(256), nullable=False),
    Column("embedding_name", String(128), nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("version", BigInteger, nullable=False, server_default=text("nextval('document_vector_version')")),
    Column("segment_id", BigInteger),
    Column("segment_row", Integer),
    PrimaryKeyConstraint("collection_id", "embedding_name", "document_id"),
    ForeignKeyConstraint(
        ["collection_id", "document_id"],
        ["documents.collection_id", "documents.document_id"],
        ondelete="CASCADE",
    ),
    Index("ix_document_vectors_segment", "segment_id", "segment_row"),
    Index("ix_document_vectors_tail", "collection_id", "embedding_name", postgresql_where=text("segment_id IS NULL")),
)

# Owned by the preparer: one immutable parquet file of vectors in S3 (the dataset format
# of clusterflow/datasets.py). `retired`: compacted or its collection deleted; the
# object is removed once no unfinished run's manifest pins it (`run_segments`).
segments = Table(
    "segments",
    metadata,
    Column("segment_id", BigInteger, Identity(), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("collection_id", String(64), nullable=False),
    Column("embedding_name", String(128), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("object_key", Text, nullable=False, unique=True),
    Column("num_rows", Integer, nullable=False),
    Column("num_bytes", BigInteger, nullable=False),
    Column("state", String(16), nullable=False, server_default="active"),
    _created(),
    Column("retired_at", DateTime(timezone=True)),
    Index("ix_segments_collection", "collection_id", "embedding_name", "state"),
)

# The segments each run's manifest reads, written with the manifest: compaction keeps
# a segment while an unfinished run pins it.
run_segments = Table(
    "run_segments",
    metadata,
    Column("run_id", String(64), nullable=False),
    Column("segment_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("run_id", "segment_id"),
    Index("ix_run_segments_segment", "segment_id"),
)

clusters = Table(
    "clusters",
    metadata,
    Column("cluster_id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("cluster_name", String(256), nullable=False),
    Column("description", Text),
    Column("collection_ids", ARRAY(String(64)), nullable=False),
    Column("embedding_name", String(128), nullable=False),
    Column("clustering_method", String(32), nullable=False),
    Column("algorithm_params", JSONB, nullable=False, server_default="{}"),
    Column("preprocessing_steps", JSONB),
    Column("sample_size", Integer),
    Column("filters", JSONB),
    Column("llm_labeling", JSONB),
    Column("vis_n_components", Integer, nullable=False, server_default="2"),
    Column("defer_visualization", Boolean, nullable=False, server_default="false"),
    Column("hierarchical", Boolean, nullable=False, server_default="false"),
    Column("max_hierarchy_depth", Integer, nullable=False, server_default="3"),
    # contracts.api.LayoutStability: align | transform | none
    Column("layout_stability", String(16), nullable=False, server_default="align"),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    _created(),
    _updated(),
    Index("ix_clusters_ns_created", "namespace", "created_at"),
)

# Written by the gateway when it accepts an execute call, before it publishes the
# event: `GET /v1/tasks/{id}` answers PENDING from here until the projector catches up.
# `canceled_at` is the gateway's record of a cancel request: workers read it at their
# stage boundaries, so a cancel stops the work even while the projector lags behind.
run_requests = Table(
    "run_requests",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("task_id", String(64), nullable=False, unique=True),
    Column("namespace", String(128), nullable=False),
    Column("cluster_id", String(64), nullable=False),
    Column("options", JSONB, nullable=False, server_default="{}"),
    _created(),
    Column("canceled_at", DateTime(timezone=True), nullable=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("cluster_id", String(64), nullable=False),
    Column("inputs", JSONB),
    Column("outputs", JSONB),
    Column("additional_data", JSONB, nullable=False, server_default="{}"),
    Column("error", Text),
    Column("progress", Float, nullable=False, server_default="0"),
    _created(),
    _updated(),
    Index("ix_tasks_status", "status"),
    Index("ix_tasks_ns_created", "namespace", "created_at"),
)

executions = Table(
    "executions",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("task_id", String(64), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("cluster_id", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("mode", String(16), nullable=False, server_default="full"),
    Column("clustering_method", String(32)),
    Column("num_clusters", Integer),
    Column("num_points", Integer),
    Column("noise_count", Integer),
    Column("metrics", JSONB),
    Column("centroids", JSONB),
    Column("artifacts", JSONB),
    Column("sampling", JSONB),
    Column("inputs", JSONB),
    Column("details", JSONB, nullable=False, server_default="{}"),
    Column("labels", JSONB),
    Column("labeling_enabled", Boolean, nullable=False, server_default="false"),
    Column("llm_labeling_errors", JSONB),
    # assign: the run whose centroids were used; composite: the runs whose centroids
    # were grouped, and where each of their clusters went (SourceClusterGroup).
    Column("source_run_id", String(64)),
    Column("source_execution_ids", JSONB),
    Column("source_clusters", JSONB),
    # full: the clusters matched to the previous full run's (contracts.events.Lineage).
    Column("lineage", JSONB),
    Column("error_message", Text),
    Column("stage", String(32)),
    Column("progress", Float, nullable=False, server_default="0"),
    _created(),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    _updated(),
    Index("ix_executions_cluster_created", "cluster_id", "created_at"),
)

# The task history: every status event once (event_id is the key).
run_events = Table(
    "run_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("service", String(32), nullable=False),
    Column("stage", String(32)),
    Column("progress", Float),
    Column("message", Text),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ix_run_events_run", "run_id", "occurred_at"),
)

# Deferred layouts, one row per run: the gateway that inserts it sends the command (two
# gateways asked at once start one computation), the clusterer records the outcome.
layout_requests = Table(
    "layout_requests",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # computing | ready | failed
    Column("error", Text, nullable=True),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# What users write onto a run after it ran (the gateway owns it: the executions read
# model stays the status projector's alone).
run_annotations = Table(
    "run_annotations",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("namespace", String(128), nullable=False),
    Column("cluster_id", String(64), nullable=False),
    Column("run_name", String(120), nullable=True),
    Column("label_overrides", JSONB, nullable=False, server_default="{}"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
)


# Owned by the labeler: one cluster's labels, keyed by a hash of its representative
# documents and the labeling configuration, reused until `expires_at`.
label_cache = Table(
    "label_cache",
    metadata,
    Column("cache_key", Text, primary_key=True),
    Column("labels", JSONB, nullable=False),
    Column("model", Text, nullable=False),
    _created(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_label_cache_expires", "expires_at"),
)


# Owned by the gateway: API keys, stored as a hash only (clusterflow/keys.py). A key
# reads `cfk_<key_id>_<secret>`; `key_id` finds the row, sha256 of the whole key must
# equal `key_hash`. `namespaces` lists what the key may use as X-Namespace ("*": all).
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("key_hash", String(64), nullable=False),
    Column("name", String(256)),
    Column("namespaces", ARRAY(String(128)), nullable=False),
    _created(),
    Column("revoked_at", DateTime(timezone=True)),
)

# The gateway's queue position (waiting tasks created before one) and its recent mean
# run time (the latest completed executions), cheap on every execute call.
Index("ix_tasks_status_created", tasks.c.status, tasks.c.created_at)
Index("ix_executions_status_completed", executions.c.status, executions.c.completed_at)
