"""ExecutionRequested -> the run's dataset in S3 -> DatasetPrepared.

Resolves the run's configuration once (the cluster definition plus the per-run
overrides, which are never persisted), applies the filters, takes a seeded sample
when there are more matches than the run may cluster, and exports in bulk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from clusterflow.filters import FilterError
from clusterflow.idempotency import ProcessedLog
from clusterflow.messaging import Publisher, RunFailed, report_status
from clusterflow.runstate import RunState, stop_if_canceled
from clusterflow.storage import ObjectStore, artifact_key
from contracts.api import LogicalOperator, TaskStatusEnum
from contracts.events import (
    ClusteringConfig,
    DatasetPrepared,
    ExecutionRequested,
    SamplingInfo,
    derived_event_id,
)
from contracts.topics import DATASET_PREPARED
from services.clusterer.engine import cap_for, validate_params
from services.preparer.export import Dataset, Selection

SERVICE = "preparer"


class DocumentSource(Protocol):
    async def load_cluster(self, namespace: str, cluster_id: str) -> dict[str, Any] | None: ...
    async def count(self, sel: Selection) -> int: ...
    async def export(self, sel: Selection, *, limit: int | None, seed: int) -> Dataset: ...


@dataclass
class Preparer:
    documents: DocumentSource
    store: ObjectStore
    publisher: Publisher
    processed: ProcessedLog
    runs: RunState

    async def handle(self, event: ExecutionRequested) -> None:
        if await self.processed.seen(SERVICE, event.event_id):
            return
        await stop_if_canceled(self.runs, event.run_id)
        await report_status(self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING,
                            stage="preparing", progress=0.02, message="selecting documents")

        cluster = await self.documents.load_cluster(event.namespace, event.cluster_id)
        if cluster is None:
            raise RunFailed(f"cluster {event.cluster_id} does not exist in namespace {event.namespace!r}")
        config = resolve_config(cluster, event)
        options = event.options
        filters = options.filters if options.filters is not None else (
            LogicalOperator.model_validate(cluster["filters"]) if cluster["filters"] else None)
        selection = Selection(event.namespace, list(cluster["collection_ids"]), config.embedding_name, filters)

        try:
            matched = await self.documents.count(selection)
        except FilterError as exc:
            raise RunFailed(f"filters cannot be applied: {exc}") from exc
        if matched == 0:
            raise RunFailed(
                "no documents match: the collections hold no document with the embedding "
                f"{config.embedding_name!r} that passes the filters"
            )
        sampling = plan_sample(matched, options.sample_size or cluster["sample_size"],
                               config.clustering_method, config.algorithm_params)
        dataset = await self.documents.export(
            selection, limit=sampling.sampled if sampling.sampled < matched else None, seed=config.seed)
        if len(dataset.document_ids) == 0:
            raise RunFailed("no documents match any more: they were deleted while the run was being prepared")

        await stop_if_canceled(self.runs, event.run_id)
        key = artifact_key(event.namespace, event.cluster_id, event.run_id, "dataset")
        frame = pl.DataFrame({
            "document_id": dataset.document_ids,
            "vector": pl.Series(dataset.vectors, dtype=pl.Array(pl.Float32, dataset.vectors.shape[1])),
        })
        self.store.put_parquet(key, frame)
        await self.publisher.publish(DATASET_PREPARED, DatasetPrepared(
            event_id=derived_event_id(event.run_id, DATASET_PREPARED.name),
            namespace=event.namespace, run_id=event.run_id, cluster_id=event.cluster_id,
            task_id=event.task_id, dataset_key=key, num_points=len(dataset.document_ids),
            dimension=int(dataset.vectors.shape[1]), config=config, sampling=sampling,
        ))
        await report_status(
            self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING, stage="prepared",
            progress=0.15, message=f"dataset of {len(dataset.document_ids)} documents ready",
            details={"sampling": sampling.model_dump(), "clustering_method": config.clustering_method,
                     "labeling_enabled": bool(config.llm_labeling and config.llm_labeling.enabled)},
        )
        await self.processed.mark(SERVICE, event.event_id)


def resolve_config(cluster: dict[str, Any], event: ExecutionRequested) -> ClusteringConfig:
    options = event.options
    method = cluster["clustering_method"]
    try:
        validate_params(method, cluster["algorithm_params"] or {})
    except ValueError as exc:
        raise RunFailed(f"invalid clustering parameters: {exc}") from exc
    labeling = options.llm_labeling if options.llm_labeling is not None else cluster["llm_labeling"]
    return ClusteringConfig(
        mode=options.mode,
        clustering_method=method,
        algorithm_params=cluster["algorithm_params"] or {},
        embedding_name=cluster["embedding_name"],
        vis_n_components=options.vis_n_components or cluster["vis_n_components"],
        defer_visualization=(options.defer_visualization if options.defer_visualization is not None
                             else cluster["defer_visualization"]),
        llm_labeling=labeling,
    )


def plan_sample(matched: int, requested: int | None, method: str, params: dict[str, Any]) -> SamplingInfo:
    """How many of the matched documents the run clusters, and why."""
    cap = cap_for(method, params)
    limit = min(requested or matched, cap)
    sampled = min(matched, limit)
    reason = None
    if sampled < matched:
        if requested is not None and requested <= cap:
            reason = f"sample_size {requested} < {matched} matching documents: a seeded sample was taken"
        else:
            reason = (f"{method} is capped at {cap:,} documents by the engine: a seeded sample of "
                      f"{sampled:,} of {matched:,} was taken")
    return SamplingInfo(matched=matched, sampled=sampled, requested_sample_size=requested,
                        cap=cap if sampled == cap and sampled < matched else None, reason=reason)
