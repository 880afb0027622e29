"""DatasetPrepared -> clustering, metrics, centroids, layout -> results in S3 ->
ExecutionClustered.

The numeric work runs in a worker thread (numpy and scikit-learn release the GIL), so
the consumer keeps heart-beating to its group during a long run, and progress
reports go out between the stages.

By mode (`config.mode`):
Every mode reads the run's vectors the one way there is: its manifest, through the
segment cache (`clusterflow/segments.py`; a segment already cached is not fetched again).

- full: cluster the run's vectors; then match the clusters to the previous completed full
  run's (`lineage.py`): a matched cluster keeps its stable id and its label (not the
  label when this run asks for LLM labels and the previous run had none).
- assign: stream the run's vectors block by block to the source run's centroids
  (`assign.py`); members are written incrementally, one block at a time. The
  clusters are the source's: same ids, stable ids and labels.
- composite: group the source runs' centroids (`composite.py`); the members of every
  source run inherit their cluster's group, streamed source by source.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clusterflow.idempotency import ProcessedLog
from clusterflow.layouts import FAILED, READY, finish_layout
from clusterflow.observability import Stopwatch, algorithm_timer
from clusterflow.messaging import Publisher, RunFailed, heartbeat, report_status
from clusterflow.runstate import RunState, stop_if_canceled
from clusterflow.segments import RunVectors, SegmentCache, SegmentLedger, SegmentUnavailable, load_manifest
from clusterflow.storage import ObjectStore, artifact_key
from contracts.api import ExecutionMode, TaskStatusEnum
from contracts.events import (
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
from contracts.topics import EXECUTION_CLUSTERED
from services.clusterer import composite, lineage, pipeline
from services.clusterer.assign import MEMBERS_SCHEMA, Assigner
from services.clusterer.engine import NOISE
from services.clusterer.ray_engine import RayEngine, RayUnavailable

SERVICE = "clusterer"
NOISE_KEY = pipeline.cluster_key(NOISE)
BATCH_ROWS = 65_536  # rows per streamed batch: 65k x 384 float32 = 100 MB
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
    cluster_ids: list[int]
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
        members = outcome.members
        if members is None and event.previous is not None:  # Ray wrote them: lineage reads them back
            members = await asyncio.to_thread(self.store.get_parquet, outcome.members_key,
                                              ["document_id", "cluster_id"])
        keys = [pipeline.cluster_key(c) for c in outcome.cluster_ids]
        await progress("lineage", 0.8, "matching clusters to the previous run")
        match, lineage_model = await asyncio.to_thread(
            self._lineage, event, keys, outcome.centroids, members)
        # A matched cluster keeps its label, unless this run asks for LLM labels and the
        # previous one had none: then the LLM names every cluster anew.
        inherited = {c.cluster_id: c for c in event.previous.centroids} \
            if event.previous and (event.previous.labeling_enabled or not event.config.labeling_enabled) else {}
        centroids = []
        for key, n in zip(keys, outcome.sizes):
            before = inherited.get(match.inherited.get(key, ""))
            centroids.append(CentroidSummary(
                cluster_id=key, num_members=n, stable_id=match.stable_ids[key],
                **({"label": before.label, "summary": before.summary, "keywords": before.keywords}
                   if before is not None else {})))
        if outcome.noise_count:
            centroids.append(CentroidSummary(cluster_id=NOISE_KEY, num_members=outcome.noise_count))

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
        )

    async def _full_in_process(self, event: DatasetPrepared, progress, timings: Stopwatch) -> "FullOutcome":
        config = event.config
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
                    X, config.clustering_method, config.algorithm_params, config.seed, config.preprocessing_steps)
        except ValueError as exc:  # the engine's message says what to change
            raise RunFailed(f"clustering failed: {exc}") from exc

        timings.lap("cluster")
        await progress("metrics", 0.6, "computing metrics and centroids")
        async with self._beating(event, "metrics", 0.6, 0.6):
            summary = await asyncio.to_thread(pipeline.summarize, X, clustering.labels, config.seed)
        timings.lap("summarize")

        coords = None
        if not config.defer_visualization:
            await progress("layout", 0.7, f"projecting to {config.vis_n_components}D")
            async with self._beating(event, "layout", 0.7, 0.8) as done:
                coords = await asyncio.to_thread(pipeline.layout, X, config.vis_n_components, config.seed, done)
            timings.lap("layout")
        del X

        members = pl.DataFrame({
            "document_id": ids,
            "cluster_id": cluster_keys(clustering.labels),
            # Noise has no centroid: its distance is null, not NaN (which JSON cannot carry).
            "distance_to_centroid": pl.Series(summary.distances, dtype=pl.Float32).fill_nan(None),
        })
        if clustering.assigned is not None:  # assigned to a cluster by policy, not a core member
            members = members.with_columns(assigned=pl.Series(clustering.assigned, dtype=pl.Boolean))
        return FullOutcome(
            members=members, cluster_ids=summary.cluster_ids, sizes=summary.sizes, centroids=summary.centroids,
            noise_count=summary.noise_count, metrics=summary.metrics, n_clusters=clustering.n_clusters,
            num_points=len(ids), seconds=clustering.seconds,
            estimator=clustering.estimator + (f" after {clustering.reduction}" if clustering.reduction else ""),
            coords=coords, ids=ids, method_choice=clustering.explanation())

    async def _full_on_ray(self, event: DatasetPrepared, progress) -> "FullOutcome | None":
        """The run as a Ray job (ray_engine.py); None when Ray cannot be reached and the
        setting lets the run fall back to this process (the run's status says so)."""
        config, ray = event.config, self.ray
        job = ray.job_for(event.namespace, event.cluster_id, event.run_id, kind="full", manifest_key=event.manifest_key,
                          method=str(getattr(config.clustering_method, "value", config.clustering_method)),
                          params=config.algorithm_params or {}, seed=config.seed,
                          vis_n_components=config.vis_n_components, layout=not config.defer_visualization)
        await progress("clustering", 0.3, f"running {config.clustering_method} as a Ray job at {ray.jobs.address}")
        try:
            async with self._beating(event, "clustering", 0.3, 0.3):
                result = await ray.run(job, poll=lambda: stop_if_canceled(self.runs, event.run_id))
        except RayUnavailable as exc:
            if not ray.falls_back:
                raise RunFailed(f"{exc}; CLUSTERFLOW_ENGINE=ray does not fall back to the clusterer's process") \
                    from exc
            log.warning("run %s: %s; computing it in-process instead", event.run_id, exc)
            await progress("clustering", 0.3, f"{exc}; computing in-process instead (CLUSTERFLOW_ENGINE=auto)")
            return None
        return FullOutcome(
            members=None, members_key=result.members_key, cluster_ids=list(range(result.n_clusters)),
            sizes=result.sizes, centroids=np.asarray(result.centroids, dtype=np.float32).reshape(
                result.n_clusters, event.dimension),
            noise_count=result.noise_count, metrics=result.metrics, n_clusters=result.n_clusters,
            num_points=result.num_points, seconds=result.algorithm_seconds, estimator=result.estimator,
            coords_key=result.coords_key)

    def _lineage(self, event: DatasetPrepared, keys: list[str], vectors: np.ndarray, members: pl.DataFrame
                 ) -> tuple[lineage.Match, Lineage]:
        """This run's clusters matched to the previous full run's (all new without one)."""
        previous = event.previous
        match = None
        if previous is not None:
            try:
                before = self._previous_clusters(previous)
                match = lineage.match_clusters(before, lineage.RunClusters(keys=keys, vectors=vectors,
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
            events=[LineageEvent(kind=e.kind, previous_cluster_ids=e.previous,
                                 previous_stable_ids=[prev_ids[k] for k in e.previous],
                                 current_cluster_ids=e.current,
                                 current_stable_ids=[match.stable_ids[k] for k in e.current],
                                 similarity=e.similarity)
                    for e in match.events],
        )

    def _previous_clusters(self, previous: SourceRun) -> lineage.RunClusters:
        frame = self.store.get_parquet(previous.centroids_key, columns=["cluster_id", "centroid"])
        frame = frame.filter((pl.col("cluster_id") != NOISE_KEY) & pl.col("centroid").is_not_null())
        keys = frame["cluster_id"].to_list()
        summaries = {c.cluster_id: c for c in previous.centroids}
        # A run from before stable ids: its clusters get the ids its first run would have.
        stable = [(summaries[k].stable_id if k in summaries else None) or lineage.new_stable_id(previous.run_id, k)
                  for k in keys]
        members = self.store.get_parquet(previous.members_key, columns=["document_id", "cluster_id"])
        return lineage.RunClusters(keys=keys, vectors=np.asarray(frame["centroid"].to_numpy(), dtype=np.float32),
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
        self.store.put_parquet(key("centroids"), centroids_frame(centroids, vectors, dim))
        coords_key, coords = outcome.coords_key, outcome.coords
        if coords is not None:
            self.store.put_parquet(key("coords"), coords_frame(outcome.ids, coords))
            coords_key = key("coords")
        return ResultArtifacts(members_key=key("members"), centroids_key=key("centroids"), coords_key=coords_key)

    # ------------------------------------------------------------------ deferred layouts

    async def handle_layout(self, command: ComputeLayout) -> None:
        """A completed run's deferred layout (the gateway's command): computed here or as
        a Ray job like a run's own layout, stored at the command's `coords_key`, the
        outcome recorded in the run's `layout_requests` row the gateway polls. A layout
        already stored is not computed again (a redelivered command)."""
        if await asyncio.to_thread(self.store.exists, command.coords_key):
            await self.layouts.finish(command.run_id, READY)
            return
        try:
            if self.ray and self.ray.wants(command.num_points):
                try:
                    await self._layout_on_ray(command)
                except RayUnavailable as exc:
                    if not self.ray.falls_back:
                        raise RunFailed(f"{exc}; CLUSTERFLOW_ENGINE=ray does not fall back") from exc
                    log.warning("layout of run %s: %s; computing it in-process instead", command.run_id, exc)
                    await self._layout_in_process(command)
            else:
                await self._layout_in_process(command)
        except (RunFailed, ValueError) as exc:
            # the run itself stays COMPLETED: only its layout failed, and the next GET retries
            await self.layouts.finish(command.run_id, FAILED, str(exc))
            return
        await self.layouts.finish(command.run_id, READY)

    async def _layout_in_process(self, command: ComputeLayout) -> None:
        id_column, X = await self._read_vectors(command)
        coords = await asyncio.to_thread(pipeline.layout, X, command.n_components, command.seed)
        del X
        await asyncio.to_thread(self.store.put_parquet, command.coords_key,
                                coords_frame(pl.Series("document_id", id_column), coords))

    async def _layout_on_ray(self, command: ComputeLayout) -> None:
        job = self.ray.job_for(command.namespace, command.cluster_id, command.run_id, kind="layout",
                               manifest_key=command.manifest_key, seed=command.seed,
                               vis_n_components=command.n_components)
        job = job.model_copy(update={"coords_key": command.coords_key})

        async def no_cancel() -> None:  # a completed run's layout has nothing to cancel
            return None

        await self.ray.run(job, poll=no_cancel)

    # ------------------------------------------------------------------------- assign

    async def _assign(self, event: DatasetPrepared) -> ExecutionClustered:
        source = event.source
        if source is None:
            raise RunFailed("an assign run needs a source run with centroids")
        threshold = event.config.assignment_threshold
        threshold = 0.5 if threshold is None else threshold
        await self._progress(event, "loading", 0.2, f"loading the centroids of run {source.run_id}")
        frame = await asyncio.to_thread(self.store.get_parquet, source.centroids_key, ["cluster_id", "centroid"])
        frame = frame.filter((pl.col("cluster_id") != NOISE_KEY) & pl.col("centroid").is_not_null())
        if frame.height == 0:
            raise RunFailed(f"the source run {source.run_id} has no centroids to assign to")
        keys = frame["cluster_id"].to_list()
        vectors = np.asarray(frame["centroid"].to_numpy(), dtype=np.float32)
        if vectors.shape[1] != event.dimension:
            raise RunFailed(f"the documents have {event.dimension} dimensions but the centroids of run "
                            f"{source.run_id} have {vectors.shape[1]}")
        assigner = Assigner(keys=keys, vectors=vectors, threshold=threshold)

        timings = Stopwatch()
        vectors_in = await asyncio.to_thread(self._vectors, event)
        with tempfile.TemporaryDirectory(prefix="clusterer-") as tmp:
            members = os.path.join(tmp, "members.parquet")
            await self._progress(event, "assigning", 0.3,
                                 f"assigning {event.num_points} documents to {len(keys)} centroids")
            async with self._beating(event, "assigning", 0.3, 0.85) as done, \
                    self._unavailable_segments_fail_the_run():
                await asyncio.to_thread(assign_blocks, assigner, vectors_in, members, on_progress=done)
            seconds = timings.lap("assign")
            await self._progress(event, "writing", 0.85, "writing results")
            await asyncio.to_thread(self.store.upload, self._key(event, "members"), members)
            timings.lap("upload")
        log.info("run %s: assigned %d documents (%s)", event.run_id, assigner.points, timings)

        summaries = {c.cluster_id: c for c in source.centroids}
        # The source's labels, unless this run asked for LLM labels itself (for assign and
        # composite runs only an explicit per-run `llm_labeling` does, see the preparer's
        # resolve_config): then the labeler names every cluster anew (it labels the
        # centroids without a label).
        inherited = ("stable_id",) if event.config.labeling_enabled else ("label", "summary", "keywords", "stable_id")
        centroids = [
            CentroidSummary(cluster_id=k, num_members=int(n),
                            **{f: getattr(summaries[k], f) for f in inherited if k in summaries})
            for k, n in zip(keys, assigner.counts)
        ]
        vector_rows = vectors.tolist()
        if assigner.noise:
            centroids.append(CentroidSummary(cluster_id=NOISE_KEY, num_members=assigner.noise))
            vector_rows.append(None)
        await asyncio.to_thread(self.store.put_parquet, self._key(event, "centroids"),
                                centroids_frame(centroids, vector_rows, vectors.shape[1]))
        return self._clustered(
            event,
            artifacts=ResultArtifacts(members_key=self._key(event, "members"),
                                      centroids_key=self._key(event, "centroids")),
            num_clusters=len(keys), num_points=assigner.points, noise_count=assigner.noise,
            centroids=centroids,
            estimator=f"nearest centroid of run {source.run_id} (cosine >= {threshold:g})",
            algorithm_seconds=round(seconds, 3),
            source_run_id=source.run_id,
        )

    # ---------------------------------------------------------------------- composite

    async def _composite(self, event: DatasetPrepared) -> ExecutionClustered:
        if len(event.sources) < 2:
            raise RunFailed("a composite run needs at least 2 source runs")
        await self._progress(event, "clustering", 0.3,
                             f"grouping {event.num_points} centroids of {len(event.sources)} runs")
        id_column, X = await self._read_vectors(event)
        origin = [i.split("/", 1) for i in id_column.to_pylist()]
        sizes = {(s.run_id, c.cluster_id): c.num_members for s in event.sources for c in s.centroids}
        dataset = pl.DataFrame({"source_run_id": [r for r, _ in origin], "source_cluster_id": [c for _, c in origin],
                                "num_members": [sizes.get((r, c), 1) for r, c in origin]},
                               schema={"source_run_id": pl.String, "source_cluster_id": pl.String,
                                       "num_members": pl.Int64})
        started = time.perf_counter()
        grouping = await asyncio.to_thread(composite.group_centroids, X, dataset["num_members"].to_numpy())
        seconds = time.perf_counter() - started
        group_keys = [pipeline.cluster_key(g) for g in range(grouping.n_groups)]
        group_of = {(r, c): group_keys[g] for r, c, g in
                    zip(dataset["source_run_id"], dataset["source_cluster_id"], grouping.labels)}

        await self._progress(event, "writing", 0.6, "writing the members of the source runs")
        with tempfile.TemporaryDirectory(prefix="clusterer-") as tmp:
            members = os.path.join(tmp, "members.parquet")
            # Every member of every source run: minutes for large sources.
            async with self._beating(event, "writing", 0.6, 0.6):
                counts = await asyncio.to_thread(self._inherit_members, event.sources, group_of, tmp, members)
                await asyncio.to_thread(self.store.upload, self._key(event, "members"), members)

        summaries = {(s.run_id, c.cluster_id): c for s in event.sources for c in s.centroids}
        source_clusters = []
        best: dict[str, tuple[int, CentroidSummary]] = {}
        for r, c, n, g, sim in zip(dataset["source_run_id"], dataset["source_cluster_id"], dataset["num_members"],
                                   grouping.labels, grouping.similarity):
            summary = summaries.get((r, c))
            source_clusters.append(SourceClusterGroup(
                source_run_id=r, source_cluster_id=c, source_stable_id=summary.stable_id if summary else None,
                label=summary.label if summary else None, num_members=int(n), cluster_id=group_keys[g],
                similarity=round(float(sim), 6)))
            # A group is named after its largest labelled source cluster.
            if summary is not None and summary.label and (group_keys[g] not in best or n > best[group_keys[g]][0]):
                best[group_keys[g]] = (int(n), summary)
        fresh = event.config.labeling_enabled
        centroids = [
            CentroidSummary(cluster_id=k, num_members=counts.get(k, 0),
                            **({"label": best[k][1].label, "summary": best[k][1].summary,
                                "keywords": best[k][1].keywords} if k in best and not fresh else {}))
            for k in group_keys
        ]
        vector_rows = grouping.centroids.tolist()
        noise = counts.get(NOISE_KEY, 0)
        if noise:
            centroids.append(CentroidSummary(cluster_id=NOISE_KEY, num_members=noise))
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
            source_execution_ids=[s.run_id for s in event.sources],
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


def cluster_keys(labels: np.ndarray) -> pl.Series:
    """Each label's cluster key ("cl_3", noise "cl_-1"), one string per distinct label."""
    distinct, positions = np.unique(labels, return_inverse=True)
    keys = pl.Series([pipeline.cluster_key(int(c)) for c in distinct], dtype=pl.String)
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
        {"cluster_id": [c.cluster_id for c in centroids], "num_members": [c.num_members for c in centroids],
         "centroid": vectors, "stable_id": [c.stable_id for c in centroids]},
        schema={"cluster_id": pl.String, "num_members": pl.Int64, "centroid": pl.Array(pl.Float32, dim),
                "stable_id": pl.String},
    )
