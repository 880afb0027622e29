"""ExecutionRequested -> the run's manifest in S3 -> DatasetPrepared.

Resolves the run's configuration once (the cluster definition plus the per-run
overrides, which are never persisted), applies the filters, takes a seeded sample
when there are more matches than the run may cluster, and writes the run's manifest:
which rows of which segments it reads (`clusterflow/segments.py`). No vector is copied.

By mode:
- full and assign: the selection over the collections' segments, taken in one Postgres
  snapshot after sealing what was left of their tails (`services/preparer/segments.py`).
- full: the cluster's latest completed full run rides along as `previous`, for stable
  cluster identities.
- assign: the source run is the one the gateway pinned (`ExecutionRequested.
  source_run_id`), else the cluster's latest completed full run with centroids. The
  engine's sampling caps do not apply (assignment is linear); only the run's own
  `sample_size` does (the cluster's stored `sample_size` sizes its clusterings).
- composite: the vectors are the centroids of the `source_run_ids` runs (any
  completed run of the namespace with centroids of one dimension), one row each, in a
  segment of the run's own.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import polars as pl

from clusterflow import datasets
from clusterflow.filters import FilterError
from clusterflow.idempotency import ProcessedLog
from clusterflow.messaging import Publisher, RunFailed, heartbeat, report_status
from clusterflow.observability import Stopwatch
from clusterflow.runstate import RunState, stop_if_canceled
from clusterflow.runs import real_centroids, source_problem
from clusterflow.segments import Manifest, SegmentRef
from clusterflow.storage import ObjectStore, artifact_key
from contracts.api import (
    DEFAULT_HIERARCHY_DEPTH,
    MIN_COMPOSITE_SOURCES,
    ExecutionMode,
    LayoutStability,
    LogicalOperator,
    TaskStatusEnum,
)
from contracts.events import (
    CentroidSummary,
    ClusteringConfig,
    DatasetPrepared,
    ExecutionRequested,
    SamplingInfo,
    SourceRun,
    derived_event_id,
)
from contracts.topics import DATASET_PREPARED
from contracts.engine_params import cap_for, validate_params, validate_preprocessing
from services.preparer.export import Selection
from services.preparer.segments import Selected

SERVICE = "preparer"
log = logging.getLogger("clusterflow.preparer")


class DocumentSource(Protocol):
    async def load_cluster(self, namespace: str, cluster_id: str) -> dict[str, Any] | None: ...
    async def load_run(self, namespace: str, run_id: str) -> dict[str, Any] | None: ...
    async def latest_full_run(self, namespace: str, cluster_id: str, *, exclude: str | None = None
                              ) -> dict[str, Any] | None: ...


class SegmentSelector(Protocol):
    async def select(self, sel: Selection, *, run_id: str, plan: Callable[[int], int | None], seed: int,
                     record: dict[str, Any] | None = None) -> Selected: ...


@dataclass
class Preparer:
    documents: DocumentSource
    segments: SegmentSelector
    store: ObjectStore
    publisher: Publisher
    processed: ProcessedLog
    runs: RunState
    heartbeat_s: float = 30.0
    # Whether the clusterer will compute a run of this many points on Ray (the
    # settings' `choose_engine`): a kmeans run there is sampled to the Ray engine's cap.
    on_ray: Callable[[int], bool] = lambda num_points: False

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
        if config.mode is ExecutionMode.composite:
            prepared, details = await self._composite(event, config)
        else:
            prepared, details = await self._documents(event, cluster, config)

        await self.publisher.publish(DATASET_PREPARED, prepared)
        await report_status(
            self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING, stage="prepared",
            progress=0.15, message=f"dataset of {prepared.num_points} {details.pop('unit', 'documents')} ready",
            sampling=prepared.sampling, clustering_method=config.clustering_method,
            labeling_enabled=config.labeling_enabled, details=details,
        )
        await self.processed.mark(SERVICE, event.event_id)

    async def _documents(self, event: ExecutionRequested, cluster: dict[str, Any], config: ClusteringConfig
                         ) -> tuple[DatasetPrepared, dict[str, Any]]:
        """full and assign: the documents of the cluster's collections that pass the
        filters, as a manifest over the collections' segments."""
        options = event.options
        assign = config.mode is ExecutionMode.assign
        source = await self._assign_source(event) if assign else None
        filters = options.filters if options.filters is not None else (
            LogicalOperator.model_validate(cluster["filters"]) if cluster["filters"] else None)
        selection = Selection(event.namespace, list(cluster["collection_ids"]), config.embedding_name, filters)
        plans: list[SamplingInfo] = []

        def plan(matched: int) -> int | None:
            # preprocessing_steps keep a run in the clusterer's process (its Ray job does not
            # transform the whole matrix), and so under the in-process cap
            sampling = plan_assign(matched, options.sample_size) if assign else plan_sample(
                matched, options.sample_size or cluster["sample_size"], config.clustering_method,
                config.algorithm_params, on_ray=self.on_ray(matched) and not config.preprocessing_steps)
            plans.append(sampling)
            return sampling.sampled if sampling.sampled < sampling.matched else None

        timings = Stopwatch()
        try:
            async with heartbeat(self.publisher, event, service=SERVICE, stage="preparing", start=0.02, end=0.1,
                                 every_s=self.heartbeat_s):
                selected = await self.segments.select(selection, run_id=event.run_id, plan=plan, seed=config.seed,
                                                      record={"mode": config.mode.value})
        except FilterError as exc:
            raise RunFailed(f"filters cannot be applied: {exc}") from exc
        except ValueError as exc:  # no single dimension: retrying will not help
            raise RunFailed(f"the documents cannot be selected: {exc}") from exc
        timings.lap("select")
        manifest = selected.manifest
        if selected.matched == 0 or len(manifest) == 0:
            raise RunFailed(
                "no documents match: the collections hold no document with the embedding "
                f"{config.embedding_name!r} that passes the filters"
            )
        await stop_if_canceled(self.runs, event.run_id)
        key = artifact_key(event.namespace, event.cluster_id, event.run_id, "manifest")
        await asyncio.to_thread(self._put_manifest, key, manifest)
        timings.lap("manifest")
        log.info("run %s: %d documents in %d segments, %d sealed for it (%s)", event.run_id, len(manifest),
                 len(manifest.segments), selected.sealed_rows, timings)
        sampling = plans[-1].model_copy(update={"sampled": len(manifest)})
        common = dict(event_id=derived_event_id(event.run_id, DATASET_PREPARED.name), namespace=event.namespace,
                      run_id=event.run_id, cluster_id=event.cluster_id, task_id=event.task_id, manifest_key=key,
                      config=config, num_points=len(manifest), dimension=manifest.dimension, sampling=sampling)
        if assign:
            prepared = DatasetPrepared(**common, source=source)
            return prepared, {"source_run_id": source.run_id, "assignment_threshold": config.assignment_threshold}
        previous = await self.documents.latest_full_run(event.namespace, event.cluster_id, exclude=event.run_id)
        prepared = DatasetPrepared(**common, previous=source_run(previous) if previous else None)
        return prepared, {}

    def _put_segment(self, key: str, ids: list[str], vectors: np.ndarray) -> None:
        with tempfile.TemporaryDirectory(prefix="preparer-") as tmp:
            path = os.path.join(tmp, "segment.parquet")
            datasets.write_dataset(path, ids, vectors)
            self.store.upload(key, path)

    def _put_manifest(self, key: str, manifest: Manifest) -> None:
        with tempfile.TemporaryDirectory(prefix="preparer-") as tmp:
            path = os.path.join(tmp, "manifest.parquet")
            manifest.write(path)
            self.store.upload(key, path)

    async def _assign_source(self, event: ExecutionRequested) -> SourceRun:
        if event.source_run_id:
            row = await self.documents.load_run(event.namespace, event.source_run_id)
            problem = check_source(row, event.source_run_id)
            if problem is None and row["cluster_id"] != event.cluster_id:
                problem = f"run {event.source_run_id} belongs to cluster {row['cluster_id']}, not {event.cluster_id}"
            if problem:
                raise RunFailed(f"mode 'assign' cannot use its source run: {problem}")
            return source_run(row)
        row = await self.documents.latest_full_run(event.namespace, event.cluster_id, exclude=event.run_id)
        if row is None:
            raise RunFailed(f"mode 'assign' needs a completed full run of cluster {event.cluster_id} with "
                            "centroids; there is none yet (execute mode 'full' first)")
        return source_run(row)

    async def _composite(self, event: ExecutionRequested, config: ClusteringConfig
                         ) -> tuple[DatasetPrepared, dict[str, Any]]:
        """The dataset of a composite run: the source runs' centroids, one row each."""
        ids = list(dict.fromkeys(event.options.source_run_ids or []))
        if len(ids) < MIN_COMPOSITE_SOURCES:
            raise RunFailed(f"mode 'composite' needs at least {MIN_COMPOSITE_SOURCES} distinct "
                            f"source runs (got {len(ids)})")
        sources, frames = [], []
        for run_id in ids:
            row = await self.documents.load_run(event.namespace, run_id)
            problem = check_source(row, run_id)
            if problem:
                raise RunFailed(f"mode 'composite' cannot use source run {run_id}: {problem}")
            source = source_run(row)
            frame = await asyncio.to_thread(self.store.get_parquet, source.centroids_key)
            frame = real_centroids(frame)
            if frame.height == 0:
                raise RunFailed(f"mode 'composite' cannot use source run {run_id}: it has no centroids")
            sources.append(source)
            frames.append(frame.select(pl.lit(run_id).alias("source_run_id"),
                                       pl.col("cluster_id").alias("source_group_id"),
                                       pl.col("num_members").cast(pl.Int64), pl.col("centroid").alias("vector")))
        dims = {run_id: f.schema["vector"].shape[0] for run_id, f in zip(ids, frames)}
        if len(set(dims.values())) > 1:
            raise RunFailed("mode 'composite' needs centroids of one dimension; the sources have "
                            + ", ".join(f"{r}: {d}" for r, d in dims.items()))
        dataset = pl.concat(frames)
        n = dataset.height
        await stop_if_canceled(self.runs, event.run_id)
        # The centroids are a segment of the run's own (not a collection's: no compaction,
        # deleted with the run), read through a manifest like every run's vectors. Their
        # ids say where each came from: "<source run>/<source group>".
        inputs = artifact_key(event.namespace, event.cluster_id, event.run_id, "centroid-inputs")
        ids_of = (dataset["source_run_id"] + "/" + dataset["source_group_id"]).to_list()
        vectors = np.asarray(dataset["vector"].to_numpy(), dtype=np.float32)
        ref = SegmentRef(segment_id=0, key=inputs, num_rows=n)
        manifest = Manifest.build(vectors.shape[1], [ref], np.zeros(n, np.int64), np.arange(n),
                                  {"mode": "composite", "source_run_ids": ids, "dimension": vectors.shape[1]})
        key = artifact_key(event.namespace, event.cluster_id, event.run_id, "manifest")
        await asyncio.to_thread(self._put_segment, inputs, ids_of, vectors)
        await asyncio.to_thread(self._put_manifest, key, manifest)
        prepared = DatasetPrepared(
            event_id=derived_event_id(event.run_id, DATASET_PREPARED.name), namespace=event.namespace,
            run_id=event.run_id, cluster_id=event.cluster_id, task_id=event.task_id, manifest_key=key,
            num_points=n, dimension=vectors.shape[1], config=config, sources=sources,
            sampling=SamplingInfo(matched=n, sampled=n,
                                  reason=f"composite: the {n} centroids of {len(sources)} runs are clustered"),
        )
        # The source runs reach the task's additional_data through the run's own row
        # (clusterflow/readmodel.py task_row), not through these details.
        return prepared, {"unit": "centroids"}


def check_source(row: dict[str, Any] | None, run_id: str) -> str | None:
    """Why a run cannot serve as a source (assign, composite), or None when it can."""
    problem = source_problem(row)
    return None if problem is None else f"run {run_id} {problem[1]}"


def source_run(row: dict[str, Any]) -> SourceRun:
    return SourceRun(
        run_id=row["run_id"], cluster_id=row["cluster_id"], mode=row.get("mode") or "full",
        members_key=row["artifacts"]["members_key"], centroids_key=row["artifacts"]["centroids_key"],
        num_points=row.get("num_points"), labeling_enabled=bool(row.get("labeling_enabled")),
        centroids=[CentroidSummary.model_validate(c) for c in row.get("centroids") or []],
    )


def resolve_config(cluster: dict[str, Any], event: ExecutionRequested) -> ClusteringConfig:
    options = event.options
    method = cluster["clustering_method"]
    try:
        validate_params(method, cluster["algorithm_params"] or {})
        validate_preprocessing(cluster.get("preprocessing_steps"))
    except ValueError as exc:
        raise RunFailed(f"invalid clustering parameters: {exc}") from exc
    derived = options.mode is not ExecutionMode.full
    # assign and composite runs inherit their clusters' labels from their sources: the
    # cluster's stored LLM labeling is for its clusterings, only an explicit per-run
    # override labels them anew. They have no inline layout either.
    labeling = options.llm_labeling if options.llm_labeling is not None else (
        None if derived else cluster["llm_labeling"])
    return ClusteringConfig(
        mode=options.mode,
        clustering_method=method,
        algorithm_params=cluster["algorithm_params"] or {},
        preprocessing_steps=cluster.get("preprocessing_steps") or None,
        embedding_name=cluster["embedding_name"],
        vis_n_components=options.vis_n_components or cluster["vis_n_components"],
        defer_visualization=True if derived else (
            options.defer_visualization if options.defer_visualization is not None
            else cluster["defer_visualization"]),
        # the run's override, else the cluster's setting (align when a row predates it)
        layout_stability=options.layout_stability or cluster.get("layout_stability") or LayoutStability.align,
        llm_labeling=labeling,
        assignment_threshold=(0.5 if options.assignment_threshold is None else options.assignment_threshold)
        if options.mode is ExecutionMode.assign else None,
        hierarchical=options.hierarchical if options.hierarchical is not None
        else bool(cluster.get("hierarchical", False)),
        max_hierarchy_depth=options.max_hierarchy_depth or cluster.get("max_hierarchy_depth")
        or DEFAULT_HIERARCHY_DEPTH,
    )


def plan_assign(matched: int, requested: int | None) -> SamplingInfo:
    """Assign runs: no engine cap (assignment is linear), only the run's sample_size."""
    sampled = min(matched, requested or matched)
    reason = (f"sample_size {requested} < {matched} matching documents: a seeded sample was taken"
              if sampled < matched else None)
    return SamplingInfo(matched=matched, sampled=sampled, requested_sample_size=requested, reason=reason)


def plan_sample(matched: int, requested: int | None, method: str, params: dict[str, Any], *,
                on_ray: bool = False) -> SamplingInfo:
    """How many of the matched documents the run clusters, and why (`on_ray`: the Ray
    engine computes it, with its own caps)."""
    cap = cap_for(method, params, on_ray=on_ray)
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
