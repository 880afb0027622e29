"""DatasetPrepared -> clustering, metrics, centroids, layout -> results in S3 ->
ExecutionClustered.

The numeric work runs in a worker thread (numpy and scikit-learn release the GIL), so
the consumer keeps heart-beating to its group during a long run, and progress
reports go out between the stages.

By mode (`config.mode`):
Every mode reads the run's vectors the one way there is: its manifest, through the
segment cache (`clusterflow/segments.py`; a segment already cached is not fetched again).

- full: cluster the run's vectors into groups; then match the groups to the previous
  completed full run's (`lineage.py`): a matched group keeps its stable id and its label (not the
  label when this run asks for LLM labels and the previous run had none).
- assign: stream the run's vectors block by block to the source run's centroids
  (`assign.py`); members are written incrementally, one block at a time, here or by a
  Ray job whose tasks assign the blocks in parallel (large runs, `ray_engine.py`). The
  groups are the source's: same ids, stable ids and labels.
- composite: group the source runs' centroids (`composite.py`); the members of every
  source run inherit their group's cross-run group, streamed source by source.

The words are docs/vocabulary.md's: a group ("cl_<n>", `group_id`) is a set of points of
the run, a cluster the definition the run belongs to. The stored parquet keeps the
reference's column names (`cluster_id`, `source_cluster_id`): past runs read unchanged.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clusterflow.idempotency import ProcessedLog
from clusterflow.layouts import FAILED, READY, finish_layout
from clusterflow.observability import Stopwatch, algorithm_timer
from clusterflow.messaging import Publisher, RunFailed, heartbeat, report_status
from clusterflow.runs import real_centroids
from clusterflow.runstate import RunState, stop_if_canceled
from clusterflow.segments import RunVectors, SegmentCache, SegmentLedger, SegmentUnavailable, load_manifest
from clusterflow.storage import ObjectStore, artifact_key, run_file_key
from contracts.api import NOISE_GROUP_ID, ExecutionMode, LayoutStability, TaskStatusEnum, applied_as
from contracts.events import (
    DEFERRED_LAYOUT_STAGE,
    CentroidSummary,
    ClusterMetrics,
    ComputeLayout,
    DatasetPrepared,
    ExecutionClustered,
    Lineage,
    LineageEvent,
    ResultArtifacts,
    SourceClusterGroup,
    SourceRun,
    derived_event_id,
)
from contracts.engine_params import cap_for
from contracts.topics import EXECUTION_CLUSTERED
from services.clusterer import composite, lineage, pipeline
from services.clusterer.assign import MEMBERS_SCHEMA, Assigner
from services.clusterer.engine import hierarchy
from services.clusterer.engine.stability import PreviousLayout, Stabilized, dumps, loads, stabilize_computed
from services.clusterer.ray_engine import RayEngine, RayUnavailable

SERVICE = "clusterer"
NOISE_KEY = NOISE_GROUP_ID
BATCH_ROWS = 65_536  # rows per streamed batch: 65k x 384 float32 = 100 MB
PROJECTION_FILE = "projection.pkl"  # a run's fitted UMAP model (layout_stability "transform")
RAY_CANNOT_TRANSFORM = "the Ray engine lays out without keeping a projection"
log = logging.getLogger("clusterflow.clusterer")

COMPOSITE_MEMBERS_SCHEMA = pa.schema([
    ("document_id", pa.string()),
    ("source_run_id", pa.string()),
    ("source_cluster_id", pa.string()),
    ("cluster_id", pa.string()),
    ("distance_to_centroid", pa.float32()),
])


class LayoutLedger(Protocol):
    async def finish(self, run_id: str, status: str, error: str | None = None) -> None: ...


class PostgresLayoutLedger:
    def __init__(self, engine) -> None:
        self.engine = engine

    async def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        await finish_layout(self.engine, run_id, status, error)


@dataclass
class FullOutcome:
    """What the engine made of a full run, wherever it ran: in this process (members
    and coordinates in memory) or on Ray (already written to S3 at the run's keys)."""

    members: pl.DataFrame | None  # document_id, cluster_id, distance_to_centroid
    group_labels: list[int]
    sizes: list[int]
    centroids: np.ndarray  # (k, d) float32: the mean of each cluster's members
    noise_count: int
    metrics: dict
    n_clusters: int
    num_points: int
    seconds: float
    estimator: str
    coords: np.ndarray | None = None
    ids: pl.Series | None = None  # the coordinates' document ids (in process)
    members_key: str | None = None
    coords_key: str | None = None
    method_choice: dict | None = None  # what `auto` chose, and why
    stability: Stabilized | None = None  # the layout's layout_stability outcome (None: no layout)
    # per cluster 0..k-1: mean/min cosine to the centroid and the representatives
    # (engine.results.CentroidSimilarity.records; None from a Ray job that predates them)
    centroid_stats: list[dict] | None = None


@dataclass
class Clusterer:
    store: ObjectStore
    cache: SegmentCache
    ledger: SegmentLedger
    publisher: Publisher
    processed: ProcessedLog
    runs: RunState
    heartbeat_s: float = 30.0
    ray: RayEngine | None = None  # large runs as Ray jobs (ray_engine.py); None: all in-process
    layouts: "LayoutLedger | None" = None  # deferred layouts' request rows (clusterflow/layouts.py)
    threads: int = pipeline.DEFAULT_THREADS  # BLAS/OpenMP threads of the numeric stages (the settings')

    async def handle(self, event: DatasetPrepared) -> None:
        if await self.processed.seen(SERVICE, event.event_id):
            return
        if event.config.mode is ExecutionMode.assign:
            clustered = await self._assign(event)
        elif event.config.mode is ExecutionMode.composite:
            clustered = await self._composite(event)
        else:
            clustered = await self._full(event)
        await self.publisher.publish(EXECUTION_CLUSTERED, clustered)
        await self.processed.mark(SERVICE, event.event_id)

    async def _progress(self, event: DatasetPrepared, stage: str, value: float, message: str) -> None:
        await stop_if_canceled(self.runs, event.run_id)
        await report_status(self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING,
                            stage=stage, progress=value, message=message)

    def _beating(self, event: DatasetPrepared, stage: str, start: float, end: float):
        return heartbeat(self.publisher, event, service=SERVICE, stage=stage, start=start, end=end,
                         every_s=self.heartbeat_s)

    def _vectors(self, event: DatasetPrepared | ComputeLayout) -> RunVectors:
        try:
            return RunVectors(load_manifest(self.store, event.manifest_key), self.cache)
        except ValueError as exc:
            raise RunFailed(f"the run's manifest {event.manifest_key} cannot be read: {exc}") from exc

    async def _read_vectors(self, event: DatasetPrepared | ComputeLayout) -> tuple[pa.ChunkedArray, np.ndarray]:
        vectors = await asyncio.to_thread(self._vectors, event)
        async with self._unavailable_segments_fail_the_run():
            return await asyncio.to_thread(vectors.load)

    @contextlib.asynccontextmanager
    async def _unavailable_segments_fail_the_run(self):
        """A segment gone or corrupt fails the run, naming it, and is reported lost: the
        next run over its collection seals its documents again."""
        try:
            yield
        except SegmentUnavailable as exc:
            await self.ledger.mark_lost(exc.key, exc.reason)
            raise RunFailed(f"{exc}; the next run seals its documents again") from exc

    def _key(self, event: DatasetPrepared, name: str) -> str:
        return artifact_key(event.namespace, event.cluster_id, event.run_id, name)

    def _clustered(self, event: DatasetPrepared, **fields) -> ExecutionClustered:
        return ExecutionClustered(
            event_id=derived_event_id(event.run_id, EXECUTION_CLUSTERED.name),
            namespace=event.namespace, run_id=event.run_id, cluster_id=event.cluster_id, task_id=event.task_id,
            config=event.config, sampling=event.sampling, **fields)

    # --------------------------------------------------------------------------- full

    async def _full(self, event: DatasetPrepared) -> ExecutionClustered:
        async def progress(stage: str, value: float, message: str) -> None:
            await self._progress(event, stage, value, message)

        timings = Stopwatch()
        # preprocessing_steps transform the whole matrix before clustering, which the Ray
        # job's block-wise engine does not do: such runs stay in this process (README).
        on_ray = self.ray and self.ray.wants(event.num_points) and not event.config.preprocessing_steps
        outcome = await self._full_on_ray(event, progress) if on_ray else None
        if outcome is None:
            outcome = await self._full_in_process(event, progress, timings)
        elif outcome.coords_key is not None:  # the Ray job's layout, kept in the previous run's shape here
            outcome.stability = await self._stabilize_stored(
                event, outcome.coords_key, outcome.coords_key, event.config.layout_stability,
                event.previous.run_id if event.previous else None)
        members = outcome.members
        if members is None and event.previous is not None:  # Ray wrote them: lineage reads them back
            members = await asyncio.to_thread(self.store.get_parquet, outcome.members_key,
                                              ["document_id", "cluster_id"])
        keys = [pipeline.group_key(c) for c in outcome.group_labels]
        await progress("lineage", 0.8, "matching clusters to the previous run")
        match, lineage_model = await asyncio.to_thread(
            self._lineage, event, keys, outcome.centroids, members)
        # A matched cluster keeps its label, unless this run asks for LLM labels and the
        # previous one had none: then the LLM names every cluster anew.
        inherited = {c.group_id: c for c in event.previous.centroids} \
            if event.previous and (event.previous.labeling_enabled or not event.config.labeling_enabled) else {}
        centroids = []
        stats = outcome.centroid_stats or [{}] * len(keys)
        for key, n, cosine in zip(keys, outcome.sizes, stats):
            before = inherited.get(match.inherited.get(key, ""))
            centroids.append(CentroidSummary(
                group_id=key, num_members=n, stable_id=match.stable_ids[key], **cosine,
                **({"label": before.label, "summary": before.summary, "keywords": before.keywords}
                   if before is not None else {})))
        if event.config.builds_hierarchy:
            centroids = with_hierarchy(centroids, outcome.centroids, event.config.max_hierarchy_depth)
        if outcome.noise_count:
            centroids.append(CentroidSummary(group_id=NOISE_KEY, num_members=outcome.noise_count))

        timings.lap("lineage")
        await progress("writing", 0.85, "writing results")
        artifacts = await asyncio.to_thread(self._write, event, outcome, centroids)
        timings.lap("write")
        log.info("run %s: %d documents clustered (%s)", event.run_id, outcome.num_points, timings)

        return self._clustered(
            event,
            artifacts=artifacts,
            num_clusters=outcome.n_clusters,
            num_points=outcome.num_points,
            noise_count=outcome.noise_count,
            metrics=ClusterMetrics(**outcome.metrics),
            centroids=centroids,
            estimator=outcome.estimator,
            algorithm_seconds=round(outcome.seconds, 3),
            method_choice=outcome.method_choice,
            lineage=lineage_model,
            layout_stability_applied=outcome.stability.applied if outcome.stability else None,
            layout_stability_reason=outcome.stability.reason if outcome.stability else None,
        )

    async def _full_in_process(self, event: DatasetPrepared, progress, timings: Stopwatch) -> "FullOutcome":
        config = event.config
        cap = cap_for(config.clustering_method, config.algorithm_params)
        if event.num_points > cap:
            # sampled for the Ray engine's cap, then not computed there (Ray away and
            # CLUSTERFLOW_ENGINE=auto): refused before the matrix is read, not after
            raise RunFailed(
                f"the run's {event.num_points:,} points were prepared for the Ray engine, which cannot compute it; "
                f"in the clusterer's process {config.clustering_method} takes at most {cap:,} "
                f"(set sample_size <= {cap:,}, or bring the Ray cluster at CLUSTERFLOW_RAY_ADDRESS back)")
        await progress("loading", 0.2, f"loading {event.num_points} vectors")
        id_column, X = await self._read_vectors(event)
        ids = pl.Series("document_id", id_column)
        del id_column
        timings.lap("load")

        await progress("clustering", 0.3, f"running {config.clustering_method}")
        try:
            async with self._beating(event, "clustering", 0.3, 0.3):
                clustering = await asyncio.to_thread(
                    algorithm_timer(config.clustering_method)(pipeline.cluster),
                    X, config.clustering_method, config.algorithm_params, config.seed, config.preprocessing_steps,
                    threads=self.threads)
        except ValueError as exc:  # the engine's message says what to change
            raise RunFailed(f"clustering failed: {exc}") from exc

        timings.lap("cluster")
        await progress("metrics", 0.6, "computing metrics and centroids")
        async with self._beating(event, "metrics", 0.6, 0.6):
            summary = await asyncio.to_thread(pipeline.summarize, X, clustering.labels, config.seed,
                                              threads=self.threads)
        timings.lap("summarize")

        stabilized = None
        if not config.defer_visualization:
            await progress("layout", 0.7, f"projecting to {config.vis_n_components}D")
            async with self._beating(event, "layout", 0.7, 0.8) as done:
                stabilized = await self._stable_layout(
                    event, X, ids, config.layout_stability, event.previous.run_id if event.previous else None,
                    n_components=config.vis_n_components, seed=config.seed,
                    embedding_name=config.embedding_name, on_progress=done)
            timings.lap("layout")
        del X

        members = pl.DataFrame({
            "document_id": ids,
            "cluster_id": group_keys_of(clustering.labels),
            # Noise has no centroid: its distance is null, not NaN (which JSON cannot carry).
            "distance_to_centroid": pl.Series(summary.distances, dtype=pl.Float32).fill_nan(None),
        })
        if clustering.assigned is not None:  # assigned to a cluster by policy, not a core member
            members = members.with_columns(assigned=pl.Series(clustering.assigned, dtype=pl.Boolean))
        return FullOutcome(
            members=members, group_labels=summary.group_labels, sizes=summary.sizes, centroids=summary.centroids,
            noise_count=summary.noise_count, metrics=summary.metrics, n_clusters=clustering.n_clusters,
            num_points=len(ids), seconds=clustering.seconds,
            estimator=clustering.estimator + (f" after {clustering.reduction}" if clustering.reduction else ""),
            coords=stabilized.coords if stabilized else None, ids=ids, method_choice=clustering.explanation(),
            stability=stabilized,
            centroid_stats=summary.similarity.with_ids(lambda rows: ids.gather(rows).to_list()).records())

    async def _full_on_ray(self, event: DatasetPrepared, progress) -> "FullOutcome | None":
        """The run as a Ray job (ray_engine.py); None when Ray cannot be reached and the
        setting lets the run fall back to this process (the run's status says so)."""
        config, ray = event.config, self.ray
        job = ray.job_for(event.namespace, event.cluster_id, event.run_id, kind="full", manifest_key=event.manifest_key,
                          method=str(getattr(config.clustering_method, "value", config.clustering_method)),
                          params=config.algorithm_params or {}, seed=config.seed,
                          vis_n_components=config.vis_n_components, layout=not config.defer_visualization)
        await progress("clustering", 0.3, f"running {config.clustering_method} as a Ray job at {ray.jobs.address}")
        async with self._beating(event, "clustering", 0.3, 0.3):
            result = await self._on_ray(f"run {event.run_id}", job, lambda: stop_if_canceled(self.runs, event.run_id),
                                        lambda message: progress("clustering", 0.3, message))
        if result is None:
            return None
        return FullOutcome(
            members=None, members_key=result.members_key, group_labels=list(range(result.n_clusters)),
            sizes=result.sizes, centroids=np.asarray(result.centroids, dtype=np.float32).reshape(
                result.n_clusters, event.dimension),
            noise_count=result.noise_count, metrics=result.metrics, n_clusters=result.n_clusters,
            num_points=result.num_points, seconds=result.algorithm_seconds, estimator=result.estimator,
            coords_key=result.coords_key, centroid_stats=result.centroid_stats, method_choice=result.method_choice)

    async def _on_ray(self, what: str, job, poll, say=None):
        """The Ray job's result; None when Ray cannot be reached and the setting lets the
        work fall back to this process (logged, and said through `say`, the run's
        status). With CLUSTERFLOW_ENGINE=ray an unreachable cluster fails the work."""
        try:
            return await self.ray.run(job, poll=poll)
        except RayUnavailable as exc:
            if not self.ray.falls_back:
                raise RunFailed(f"{exc}; CLUSTERFLOW_ENGINE=ray does not fall back to the clusterer's process") \
                    from exc
            log.warning("%s: %s; computing it in-process instead", what, exc)
            if say is not None:
                await say(f"{exc}; computing in-process instead (CLUSTERFLOW_ENGINE=auto)")
            return None

    def _lineage(self, event: DatasetPrepared, keys: list[str], vectors: np.ndarray, members: pl.DataFrame
                 ) -> tuple[lineage.Match, Lineage]:
        """This run's clusters matched to the previous full run's (all new without one)."""
        previous = event.previous
        match = None
        if previous is not None:
            try:
                before = self._previous_groups(previous)
                match = lineage.match_groups(before, lineage.RunGroups(keys=keys, vectors=vectors,
                                                                           members=members), event.run_id)
            except Exception as exc:  # noqa: BLE001 - a lost previous result must not fail every later run
                log.warning("run %s: the previous run %s cannot be read (%r); its clusters start new lineages",
                            event.run_id, previous.run_id, exc)
                before = None
        if match is None:
            previous, before = None, None
            match = lineage.first_run(event.run_id, keys)
        prev_ids = dict(zip(before.keys, before.stable_ids)) if before is not None else {}
        return match, Lineage(
            previous_run_id=previous.run_id if previous else None,
            basis=match.basis, shared_documents=match.shared_documents,
            events=[LineageEvent(kind=e.kind, previous_group_ids=e.previous,
                                 previous_stable_ids=[prev_ids[k] for k in e.previous],
                                 current_group_ids=e.current,
                                 current_stable_ids=[match.stable_ids[k] for k in e.current],
                                 similarity=e.similarity)
                    for e in match.events],
        )

    def _previous_groups(self, previous: SourceRun) -> lineage.RunGroups:
        frame = self.store.get_parquet(previous.centroids_key, columns=["cluster_id", "centroid"])
        frame = real_centroids(frame)
        keys = frame["cluster_id"].to_list()
        summaries = {c.group_id: c for c in previous.centroids}
        # A run from before stable ids: its clusters get the ids its first run would have.
        stable = [(summaries[k].stable_id if k in summaries else None) or lineage.new_stable_id(previous.run_id, k)
                  for k in keys]
        members = self.store.get_parquet(previous.members_key, columns=["document_id", "cluster_id"])
        return lineage.RunGroups(keys=keys, vectors=np.asarray(frame["centroid"].to_numpy(), dtype=np.float32),
                                   stable_ids=stable, members=members)

    def _write(self, event: DatasetPrepared, outcome: "FullOutcome",
               centroids: list[CentroidSummary]) -> ResultArtifacts:
        """The centroids, and members and coordinates unless the Ray job wrote them
        (same keys, same schemas)."""
        def key(name: str) -> str:
            return self._key(event, name)

        if outcome.members is not None:
            self.store.put_parquet(key("members"), outcome.members)
        dim = outcome.centroids.shape[1]
        vectors = outcome.centroids.tolist()
        if outcome.noise_count:  # noise is listed with its count, without a centroid
            vectors = [*vectors, None]
        # The parquet holds the clusters members belong to (assign runs and lineage read
        # it): a hierarchy's topics live in the run's centroid summaries only.
        clusters = [c for c in centroids if not c.child_group_ids]
        self.store.put_parquet(key("centroids"), centroids_frame(clusters, vectors, dim))
        coords_key, coords = outcome.coords_key, outcome.coords
        if coords is not None:
            self.store.put_parquet(key("coords"), coords_frame(outcome.ids, coords))
            coords_key = key("coords")
        return ResultArtifacts(members_key=key("members"), centroids_key=key("centroids"), coords_key=coords_key)

    # ------------------------------------------------------------------ deferred layouts

    async def handle_layout(self, command: ComputeLayout) -> None:
        """A completed run's deferred layout (the gateway's command): computed here or as
        a Ray job like a run's own layout, kept in the previous run's shape
        (`layout_stability`), stored at the command's `coords_key`, the outcome recorded
        in the run's `layout_requests` row the gateway polls and reported on the status
        topic (what was applied). A layout already stored is not computed again (a
        redelivered command): its report went out before it was stored."""
        if await asyncio.to_thread(self.store.exists, command.coords_key):
            await self.layouts.finish(command.run_id, READY)
            return
        try:
            if not (self.ray and self.ray.wants(command.num_points) and await self._layout_on_ray(command)):
                await self._layout_in_process(command)
        except (RunFailed, ValueError) as exc:
            # the run itself stays COMPLETED: only its layout failed, and the next GET retries
            await self.layouts.finish(command.run_id, FAILED, str(exc))
            return
        await self.layouts.finish(command.run_id, READY)

    async def _layout_in_process(self, command: ComputeLayout) -> None:
        id_column, X = await self._read_vectors(command)
        ids = pl.Series("document_id", id_column)
        del id_column
        stabilized = await self._stable_layout(
            command, X, ids, command.layout_stability, command.previous_run_id, n_components=command.n_components,
            seed=command.seed, embedding_name=command.embedding_name)
        del X
        await self._report_layout(command, stabilized)
        await asyncio.to_thread(self.store.put_parquet, command.coords_key, coords_frame(ids, stabilized.coords))

    async def _layout_on_ray(self, command: ComputeLayout) -> bool:
        """The layout as a Ray job: False when it fell back (Ray unreachable, `auto`).
        The job writes beside the final key: a layout is served once it is in the
        previous run's shape, and a stored one is never computed again."""
        raw_key = artifact_key(command.namespace, command.cluster_id, command.run_id, "coords-unaligned")
        job = self.ray.job_for(command.namespace, command.cluster_id, command.run_id, kind="layout",
                               manifest_key=command.manifest_key, seed=command.seed,
                               vis_n_components=command.n_components)
        job = job.model_copy(update={"coords_key": raw_key})

        async def no_cancel() -> None:  # a completed run's layout has nothing to cancel
            return None

        if await self._on_ray(f"layout of run {command.run_id}", job, no_cancel) is None:
            return False
        stabilized = await self._stabilize_stored(command, job.coords_key, command.coords_key,
                                                  command.layout_stability, command.previous_run_id,
                                                  report=self._report_layout)
        await asyncio.to_thread(self.store.delete_prefix, raw_key)
        log.info("layout of run %s: %s (%s)", command.run_id, stabilized.applied, stabilized.reason)
        return True

    async def _report_layout(self, command: ComputeLayout, stabilized: Stabilized) -> None:
        """A deferred layout's outcome, for the run's read model (the projector merges it
        into the completed run, see DEFERRED_LAYOUT_STAGE)."""
        await report_status(self.publisher, command, service=SERVICE, status=TaskStatusEnum.COMPLETED,
                            stage=DEFERRED_LAYOUT_STAGE, message=f"layout: {stabilized.reason}",
                            layout_stability_applied=applied_as(stabilized.applied),
                            layout_stability_reason=stabilized.reason)

    # ------------------------------------------------------------------ layout stability

    async def _stable_layout(self, run: DatasetPrepared | ComputeLayout, X: np.ndarray, ids: pl.Series,
                             setting: LayoutStability, previous_run_id: str | None, *, n_components: int,
                             seed: int, embedding_name: str | None, on_progress=None) -> Stabilized:
        """The run's layout in this process, kept in the previous run's shape; with
        `transform`, the projection it used or fitted is stored with the run."""
        previous, model_bytes = await asyncio.to_thread(
            self._previous_layout, run.namespace, run.cluster_id, previous_run_id, setting)
        stabilized = await asyncio.to_thread(
            pipeline.stable_layout, X, ids, setting, previous, n_components=n_components, seed=seed,
            embedding_name=embedding_name or "", run_id=run.run_id, on_progress=on_progress, threads=self.threads)
        if stabilized.projection is not None:
            reused = previous is not None and stabilized.projection is previous.projection
            await asyncio.to_thread(self._put_projection, run, model_bytes if reused else None, stabilized)
        log.info("layout of run %s: %s (%s)", run.run_id, stabilized.applied, stabilized.reason)
        return stabilized

    async def _stabilize_stored(self, run: DatasetPrepared | ComputeLayout, source_key: str, target_key: str,
                                setting: LayoutStability, previous_run_id: str | None, report=None) -> Stabilized:
        """A layout the Ray engine stored at `source_key`, kept in the previous run's shape
        and stored at `target_key` (`report` hears the outcome before it is stored).
        The Ray engine keeps no projection: `transform` aligns there, and says so."""
        previous, _ = await asyncio.to_thread(
            self._previous_layout, run.namespace, run.cluster_id, previous_run_id, LayoutStability.align)
        frame = await asyncio.to_thread(self.store.get_parquet, source_key)
        axes = [c for c in ("x", "y", "z") if c in frame.columns]
        ids = frame["document_id"]
        coords = frame.select(axes).to_numpy().astype(np.float32)
        del frame
        stabilized = await asyncio.to_thread(stabilize_computed, coords, ids, setting, previous,
                                             cannot_transform=RAY_CANNOT_TRANSFORM)
        if report is not None:
            await report(run, stabilized)
        if stabilized.coords is not coords or source_key != target_key:
            await asyncio.to_thread(self.store.put_parquet, target_key, coords_frame(ids, stabilized.coords))
        return replace(stabilized, coords=np.empty((0, len(axes)), np.float32))  # stored: not held twice

    def _previous_layout(self, namespace: str, cluster_id: str, run_id: str | None, setting: LayoutStability
                         ) -> tuple[PreviousLayout | None, bytes | None]:
        """(blocking) The previous run's stored coordinates and, for `transform`, its
        projection (with its stored bytes). A layout or model that cannot be read is a
        reason in the outcome, never a failed run."""
        if run_id is None or setting is LayoutStability.none:
            return None, None
        ids = coords = problem = None
        key = artifact_key(namespace, cluster_id, run_id, "coords")
        try:
            if not self.store.exists(key):
                problem = "its layout was deferred and never computed"
            else:
                frame = self.store.get_parquet(key)
                ids = frame["document_id"]
                coords = frame.select([c for c in ("x", "y", "z") if c in frame.columns]).to_numpy()
        except Exception as exc:  # noqa: BLE001 - a lost previous layout must not fail this one
            problem = f"its layout cannot be read: {exc!r}"
        projection = data = why = None
        if setting is LayoutStability.transform:
            try:
                data = self._get_bytes(run_file_key(namespace, cluster_id, run_id, PROJECTION_FILE))
                if data is None:
                    why = "it was laid out without layout_stability 'transform', or on the Ray engine"
                else:
                    projection = loads(data)
            except Exception as exc:  # noqa: BLE001 - as above: a reason, not a failure
                why = str(exc) if isinstance(exc, ValueError) else f"it cannot be read: {exc!r}"
        return PreviousLayout(run_id=run_id, ids=ids, coords=coords, problem=problem, projection=projection,
                              projection_problem=why), data

    def _put_projection(self, run: DatasetPrepared | ComputeLayout, data: bytes | None,
                        stabilized: Stabilized) -> None:
        key = run_file_key(run.namespace, run.cluster_id, run.run_id, PROJECTION_FILE)
        with tempfile.TemporaryDirectory(prefix="clusterer-") as tmp:
            path = os.path.join(tmp, PROJECTION_FILE)
            with open(path, "wb") as f:
                f.write(data if data is not None else dumps(stabilized.projection))
            self.store.upload(key, path)

    def _get_bytes(self, key: str) -> bytes | None:
        if not self.store.exists(key):
            return None
        with tempfile.TemporaryDirectory(prefix="clusterer-") as tmp:
            path = os.path.join(tmp, "object")
            self.store.download(key, path)
            with open(path, "rb") as f:
                return f.read()

    # ------------------------------------------------------------------------- assign

    async def _assign(self, event: DatasetPrepared) -> ExecutionClustered:
        source = event.source
        if source is None:
            raise RunFailed("an assign run needs a source run with centroids")
        threshold = event.config.assignment_threshold
        threshold = 0.5 if threshold is None else threshold
        await self._progress(event, "loading", 0.2, f"loading the centroids of run {source.run_id}")
        frame = await asyncio.to_thread(self.store.get_parquet, source.centroids_key, ["cluster_id", "centroid"])
        frame = real_centroids(frame)
        if frame.height == 0:
            raise RunFailed(f"the source run {source.run_id} has no centroids to assign to")
        keys = frame["cluster_id"].to_list()
        vectors = np.asarray(frame["centroid"].to_numpy(), dtype=np.float32)
        if vectors.shape[1] != event.dimension:
            raise RunFailed(f"the documents have {event.dimension} dimensions but the centroids of run "
                            f"{source.run_id} have {vectors.shape[1]}")
        assigner = Assigner(keys=keys, vectors=vectors, threshold=threshold)

        timings = Stopwatch()
        on_ray = self.ray is not None and self.ray.wants(event.num_points) and \
            await self._assign_on_ray(event, assigner)
        if not on_ray:
            vectors_in = await asyncio.to_thread(self._vectors, event)
            with tempfile.TemporaryDirectory(prefix="clusterer-") as tmp:
                members = os.path.join(tmp, "members.parquet")
                await self._progress(event, "assigning", 0.3,
                                     f"assigning {event.num_points} documents to {len(keys)} centroids")
                async with self._beating(event, "assigning", 0.3, 0.85) as done, \
                        self._unavailable_segments_fail_the_run():
                    await asyncio.to_thread(assign_blocks, assigner, vectors_in, members, on_progress=done)
                timings.lap("assign")
                await self._progress(event, "writing", 0.85, "writing results")
                await asyncio.to_thread(self.store.upload, self._key(event, "members"), members)
                timings.lap("upload")
        else:
            timings.lap("assign")
        seconds = timings.laps["assign"]
        log.info("run %s: assigned %d documents (%s)", event.run_id, assigner.points, timings)

        summaries = {c.group_id: c for c in source.centroids}
        # The source's labels, unless this run asked for LLM labels itself (for assign and
        # composite runs only an explicit per-run `llm_labeling` does, see the preparer's
        # resolve_config): then the labeler names every cluster anew (it labels the
        # centroids without a label).
        inherited = ("stable_id",) if event.config.labeling_enabled else ("label", "summary", "keywords", "stable_id")
        centroids = [
            CentroidSummary(group_id=k, num_members=int(n), **cosine,
                            **{f: getattr(summaries[k], f) for f in inherited if k in summaries})
            for k, n, cosine in zip(keys, assigner.counts, assigner.centroid_stats())
        ]
        vector_rows = vectors.tolist()
        if assigner.noise:
            centroids.append(CentroidSummary(group_id=NOISE_KEY, num_members=assigner.noise))
            vector_rows.append(None)
        await asyncio.to_thread(self.store.put_parquet, self._key(event, "centroids"),
                                centroids_frame(centroids, vector_rows, vectors.shape[1]))
        return self._clustered(
            event,
            artifacts=ResultArtifacts(members_key=self._key(event, "members"),
                                      centroids_key=self._key(event, "centroids")),
            num_clusters=len(keys), num_points=assigner.points, noise_count=assigner.noise,
            centroids=centroids,
            estimator=f"nearest centroid of run {source.run_id} (cosine >= {threshold:g})"
                      + (", block by block on Ray" if on_ray else ""),
            algorithm_seconds=round(seconds, 3),
            source_run_id=source.run_id,
        )

    async def _assign_on_ray(self, event: DatasetPrepared, assigner: Assigner) -> bool:
        """The assign run as a Ray job: its tasks read the manifest's blocks and assign
        them to `assigner`'s centroids; the job writes the members at the run's key and
        its tally goes into `assigner`. False when Ray cannot be reached and the run
        falls back to this process."""
        job = self.ray.job_for(event.namespace, event.cluster_id, event.run_id, kind="assign",
                               manifest_key=event.manifest_key, centroid_ids=list(assigner.keys),
                               centroids=assigner.vectors.tolist(), assignment_threshold=assigner.threshold)
        await self._progress(event, "assigning", 0.3, f"assigning {event.num_points} documents to "
                             f"{len(assigner.keys)} centroids as a Ray job at {self.ray.jobs.address}")
        async with self._beating(event, "assigning", 0.3, 0.85):
            result = await self._on_ray(f"run {event.run_id}", job, lambda: stop_if_canceled(self.runs, event.run_id),
                                        lambda message: self._progress(event, "assigning", 0.3, message))
        if result is None:
            return False
        similarity = result.metrics.get("mean_similarity")
        assigner.absorb(result.sizes, result.noise_count, result.num_points,
                        (similarity or 0.0) * result.num_points, result.centroid_stats)
        return True

    # ---------------------------------------------------------------------- composite

    async def _composite(self, event: DatasetPrepared) -> ExecutionClustered:
        if len(event.sources) < 2:
            raise RunFailed("a composite run needs at least 2 source runs")
        await self._progress(event, "clustering", 0.3,
                             f"grouping {event.num_points} centroids of {len(event.sources)} runs")
        id_column, X = await self._read_vectors(event)
        origin = [i.split("/", 1) for i in id_column.to_pylist()]
        sizes = {(s.run_id, c.group_id): c.num_members for s in event.sources for c in s.centroids}
        dataset = pl.DataFrame({"source_run_id": [r for r, _ in origin], "source_group_id": [c for _, c in origin],
                                "num_members": [sizes.get((r, c), 1) for r, c in origin]},
                               schema={"source_run_id": pl.String, "source_group_id": pl.String,
                                       "num_members": pl.Int64})
        started = time.perf_counter()
        grouping = await asyncio.to_thread(composite.group_centroids, X, dataset["num_members"].to_numpy())
        seconds = time.perf_counter() - started
        group_keys = [pipeline.group_key(g) for g in range(grouping.n_groups)]
        group_of = {(r, c): group_keys[g] for r, c, g in
                    zip(dataset["source_run_id"], dataset["source_group_id"], grouping.labels)}

        await self._progress(event, "writing", 0.6, "writing the members of the source runs")
        with tempfile.TemporaryDirectory(prefix="clusterer-") as tmp:
            members = os.path.join(tmp, "members.parquet")
            # Every member of every source run: minutes for large sources.
            async with self._beating(event, "writing", 0.6, 0.6):
                counts = await asyncio.to_thread(self._inherit_members, event.sources, group_of, tmp, members)
                await asyncio.to_thread(self.store.upload, self._key(event, "members"), members)

        summaries = {(s.run_id, c.group_id): c for s in event.sources for c in s.centroids}
        source_clusters = []
        best: dict[str, tuple[int, CentroidSummary]] = {}
        for r, c, n, g, sim in zip(dataset["source_run_id"], dataset["source_group_id"], dataset["num_members"],
                                   grouping.labels, grouping.similarity):
            summary = summaries.get((r, c))
            source_clusters.append(SourceClusterGroup(
                source_run_id=r, source_group_id=c, source_stable_id=summary.stable_id if summary else None,
                label=summary.label if summary else None, num_members=int(n), group_id=group_keys[g],
                similarity=round(float(sim), 6)))
            # A group is named after its largest labelled source cluster.
            if summary is not None and summary.label and (group_keys[g] not in best or n > best[group_keys[g]][0]):
                best[group_keys[g]] = (int(n), summary)
        fresh = event.config.labeling_enabled
        centroids = [
            CentroidSummary(group_id=k, num_members=counts.get(k, 0),
                            **({"label": best[k][1].label, "summary": best[k][1].summary,
                                "keywords": best[k][1].keywords} if k in best and not fresh else {}))
            for k in group_keys
        ]
        vector_rows = grouping.centroids.tolist()
        noise = counts.get(NOISE_KEY, 0)
        if noise:
            centroids.append(CentroidSummary(group_id=NOISE_KEY, num_members=noise))
            vector_rows.append(None)
        await asyncio.to_thread(self.store.put_parquet, self._key(event, "centroids"),
                                centroids_frame(centroids, vector_rows, grouping.centroids.shape[1]))
        return self._clustered(
            event,
            artifacts=ResultArtifacts(members_key=self._key(event, "members"),
                                      centroids_key=self._key(event, "centroids")),
            num_clusters=grouping.n_groups, num_points=sum(counts.values()), noise_count=noise,
            centroids=centroids,
            estimator=(f"agglomerative (average linkage, cosine >= {composite.COMPOSITE_MIN_SIMILARITY:g}) "
                       f"over {event.num_points} centroids"),
            algorithm_seconds=round(seconds, 3),
            source_run_ids=[s.run_id for s in event.sources],
            source_clusters=source_clusters,
        )

    def _inherit_members(self, sources: list[SourceRun], group_of: dict[tuple[str, str], str], tmp: str,
                         path: str) -> dict[str, int]:
        """Every member of every source run, with its cluster's group; streamed source by
        source and batch by batch. Returns the member count of each group."""
        counts: dict[str, int] = {}
        with pq.ParquetWriter(path, COMPOSITE_MEMBERS_SCHEMA, compression="zstd") as writer:
            for source in sources:
                local = os.path.join(tmp, f"source-{source.run_id}.parquet")
                self.store.download(source.members_key, local)
                mapping = {c: g for (r, c), g in group_of.items() if r == source.run_id}
                for batch in pq.ParquetFile(local).iter_batches(
                        batch_size=BATCH_ROWS, columns=["document_id", "cluster_id", "distance_to_centroid"]):
                    frame = pl.from_arrow(batch)
                    frame = frame.select(
                        pl.col("document_id").cast(pl.String),
                        pl.lit(source.run_id, dtype=pl.String).alias("source_run_id"),
                        pl.col("cluster_id").cast(pl.String).alias("source_cluster_id"),
                        pl.col("cluster_id").cast(pl.String)
                        .replace_strict(mapping, default=NOISE_KEY, return_dtype=pl.String).alias("cluster_id"),
                        pl.col("distance_to_centroid").cast(pl.Float32),
                    )
                    for key, n in frame["cluster_id"].value_counts().iter_rows():
                        counts[key] = counts.get(key, 0) + n
                    writer.write_table(frame.to_arrow().cast(COMPOSITE_MEMBERS_SCHEMA))
                os.unlink(local)
        return counts


def assign_blocks(assigner: Assigner, vectors: RunVectors, members: str, batch_rows: int = BATCH_ROWS,
                  on_progress: Callable[[float], None] | None = None) -> None:
    """Assign a run's documents block by block (`batch_rows` at a time, from the
    segment cache), writing each block's members as it goes: memory holds one block,
    whatever the run's size. `on_progress` hears the fraction done after each block."""
    total, done = max(len(vectors.manifest), 1), 0
    with pq.ParquetWriter(members, MEMBERS_SCHEMA, compression="zstd") as writer:
        for ids, X in vectors.blocks(batch_rows):
            writer.write_table(assigner.assign(ids, X))
            done += len(ids)
            if on_progress is not None:
                on_progress(done / total)


def with_hierarchy(leaves: list[CentroidSummary], vectors: np.ndarray, max_depth: int) -> list[CentroidSummary]:
    """The leaves (the run's clusters, in cluster id order) with their place in the
    hierarchy, then the topics over them ("cl_<k>", "cl_<k+1>", ...: top level first).
    Topics have no stable id: lineage follows the leaves."""
    tree = hierarchy.build_hierarchy(vectors, np.array([c.num_members for c in leaves]), max_depth)
    keys = [c.group_id for c in leaves] + [pipeline.group_key(len(leaves) + j) for j in range(tree.n_parents)]
    if tree.n_parents == 0:
        return list(leaves)

    def placed(node: int) -> dict:
        up = int(tree.parent[node])
        return {"parent_group_id": keys[up] if up >= 0 else None, "hierarchy_level": int(tree.level[node]),
                "child_group_ids": [keys[c] for c in tree.children(node)]}

    return ([c.model_copy(update=placed(i)) for i, c in enumerate(leaves)]
            + [CentroidSummary(group_id=keys[node], num_members=int(tree.sizes[node]), **placed(node))
               for node in range(tree.n_leaves, tree.n_nodes)])


def group_keys_of(labels: np.ndarray) -> pl.Series:
    """Each label's cluster key ("cl_3", noise "cl_-1"), one string per distinct label."""
    distinct, positions = np.unique(labels, return_inverse=True)
    keys = pl.Series([pipeline.group_key(int(c)) for c in distinct], dtype=pl.String)
    return keys.gather(positions.ravel())


def coords_frame(ids: pl.Series, coords: np.ndarray) -> pl.DataFrame:
    """The coords parquet: document_id, x, y (and z for 3-D layouts), float32."""
    columns = {"document_id": ids, "x": coords[:, 0], "y": coords[:, 1]}
    if coords.shape[1] == 3:
        columns["z"] = coords[:, 2]
    return pl.DataFrame(columns)


def centroids_frame(centroids: list[CentroidSummary], vectors: list, dim: int) -> pl.DataFrame:
    """The centroids parquet: one row per cluster (noise last, without a vector)."""
    return pl.DataFrame(
        {"cluster_id": [c.group_id for c in centroids], "num_members": [c.num_members for c in centroids],
         "centroid": vectors, "stable_id": [c.stable_id for c in centroids]},
        schema={"cluster_id": pl.String, "num_members": pl.Int64, "centroid": pl.Array(pl.Float32, dim),
                "stable_id": pl.String},
    )
