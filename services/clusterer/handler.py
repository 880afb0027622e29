"""DatasetPrepared -> clustering, metrics, centroids, layout -> results in S3 ->
ExecutionClustered.

The numeric work runs in a worker thread (numpy and scikit-learn release the GIL), so
the consumer keeps heart-beating to its group during a long run, and progress
reports go out between the stages.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import polars as pl

from clusterflow.idempotency import ProcessedLog
from clusterflow.messaging import Publisher, RunFailed, report_status
from clusterflow.runstate import RunState, stop_if_canceled
from clusterflow.storage import ObjectStore, artifact_key
from contracts.api import TaskStatusEnum
from contracts.events import (
    CentroidSummary,
    ClusterMetrics,
    DatasetPrepared,
    ExecutionClustered,
    ResultArtifacts,
    derived_event_id,
)
from contracts.topics import EXECUTION_CLUSTERED
from services.clusterer import pipeline
from services.clusterer.engine import NOISE

SERVICE = "clusterer"


@dataclass
class Clusterer:
    store: ObjectStore
    publisher: Publisher
    processed: ProcessedLog
    runs: RunState

    async def handle(self, event: DatasetPrepared) -> None:
        if await self.processed.seen(SERVICE, event.event_id):
            return
        config = event.config

        async def progress(stage: str, value: float, message: str) -> None:
            await stop_if_canceled(self.runs, event.run_id)
            await report_status(self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING,
                                stage=stage, progress=value, message=message)

        await progress("loading", 0.2, f"loading {event.num_points} vectors")
        frame = await asyncio.to_thread(self.store.get_parquet, event.dataset_key)
        ids = frame["document_id"]
        X = frame["vector"].to_numpy().astype(np.float32, copy=False)
        del frame

        await progress("clustering", 0.3, f"running {config.clustering_method}")
        try:
            clustering = await asyncio.to_thread(
                pipeline.cluster, X, config.clustering_method, config.algorithm_params, config.seed)
        except ValueError as exc:  # the engine's message says what to change
            raise RunFailed(f"clustering failed: {exc}") from exc

        await progress("metrics", 0.6, "computing metrics and centroids")
        summary = await asyncio.to_thread(pipeline.summarize, X, clustering.labels, config.seed)

        coords = None
        if not config.defer_visualization:
            await progress("layout", 0.7, f"projecting to {config.vis_n_components}D")
            coords = await asyncio.to_thread(pipeline.layout, X, config.vis_n_components, config.seed)
        del X

        await progress("writing", 0.85, "writing results")
        artifacts = await asyncio.to_thread(self._write, event, ids, clustering.labels, summary, coords)

        await self.publisher.publish(EXECUTION_CLUSTERED, ExecutionClustered(
            event_id=derived_event_id(event.run_id, EXECUTION_CLUSTERED.name),
            namespace=event.namespace, run_id=event.run_id, cluster_id=event.cluster_id, task_id=event.task_id,
            artifacts=artifacts,
            num_clusters=clustering.n_clusters,
            num_points=len(ids),
            noise_count=summary.noise_count,
            metrics=ClusterMetrics(**summary.metrics),
            centroids=[CentroidSummary(cluster_id=pipeline.cluster_key(c), num_members=n)
                       for c, n in zip(summary.cluster_ids, summary.sizes)]
            + ([CentroidSummary(cluster_id=pipeline.cluster_key(NOISE), num_members=summary.noise_count)]
               if summary.noise_count else []),
            estimator=clustering.estimator + (f" after {clustering.reduction}" if clustering.reduction else ""),
            algorithm_seconds=round(clustering.seconds, 3),
            config=config,
            sampling=event.sampling,
        ))
        await self.processed.mark(SERVICE, event.event_id)

    def _write(self, event: DatasetPrepared, ids: pl.Series, labels: np.ndarray,
               summary: "pipeline.Summary", coords: np.ndarray | None) -> ResultArtifacts:
        def key(name: str) -> str:
            return artifact_key(event.namespace, event.cluster_id, event.run_id, name)

        members = pl.DataFrame({
            "document_id": ids,
            "cluster_id": [pipeline.cluster_key(int(c)) for c in labels],
            # Noise has no centroid: its distance is null, not NaN (which JSON cannot carry).
            "distance_to_centroid": pl.Series(summary.distances, dtype=pl.Float32).fill_nan(None),
        })
        self.store.put_parquet(key("members"), members)
        dim = summary.centroids.shape[1]
        keys = [pipeline.cluster_key(c) for c in summary.cluster_ids]
        sizes, vectors = list(summary.sizes), summary.centroids.tolist()
        if summary.noise_count:  # noise is listed with its count, without a centroid
            keys, sizes, vectors = [*keys, pipeline.cluster_key(NOISE)], [*sizes, summary.noise_count], [*vectors, None]
        centroids = pl.DataFrame(
            {"cluster_id": keys, "num_members": sizes, "centroid": vectors},
            schema={"cluster_id": pl.String, "num_members": pl.Int64, "centroid": pl.Array(pl.Float32, dim)},
        )
        self.store.put_parquet(key("centroids"), centroids)
        coords_key = None
        if coords is not None:
            columns = {"document_id": ids, "x": coords[:, 0], "y": coords[:, 1]}
            if coords.shape[1] == 3:
                columns["z"] = coords[:, 2]
            self.store.put_parquet(key("coords"), pl.DataFrame(columns))
            coords_key = key("coords")
        return ResultArtifacts(members_key=key("members"), centroids_key=key("centroids"), coords_key=coords_key)
