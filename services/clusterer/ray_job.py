"""The engine as a Ray job: `python -m services.clusterer.ray_job <spec key>`.

The clusterer (ray_engine.py) writes an `EngineJob` spec to S3 and submits this module
as a Ray job; the job's driver plans the run's rows into blocks (slices of the
manifest's segments), and Ray tasks, on any node, each read one block from S3 through
that node's segment cache and return per-block results: sums and counts for k-means and
the metrics, labels and distances with the block's document ids, an assign run's
members against the source run's centroids. The driver reduces
the sums and writes the rows it gets back straight into the members/coords parquet, a
block at a time, joined by document id (blocks come back in whatever order they
finish). So no process holds the run's matrix; the driver holds k x d sums, a seeded
sample (k-means' init, silhouette, the layout's fit) and one block's results.

Algorithms that need all their points at once (every method but kmeans) run as one
task that asks Ray for the memory the matrix needs (their caps keep it bounded).

What the job leaves in S3: members.parquet and coords.parquet at the run's keys (the
schemas of the in-process path) and `engine-result.json` (`EngineResult`): sizes,
centroids, metrics, and which node ran each block. The clusterer turns that into the
same centroids artifact and `ExecutionClustered` event as an in-process run.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from clusterflow.storage import ObjectStore

log = logging.getLogger("clusterflow.ray_job")

MEMBERS_SCHEMA = pa.schema([("document_id", pa.string()), ("cluster_id", pa.string()),
                            ("distance_to_centroid", pa.float32())])
RESULT_NAME = "engine-result.json"
SPEC_NAME = "engine-spec.json"


class EngineJob(BaseModel):
    """What one job computes (written by the clusterer, read by the job)."""

    kind: Literal["full", "layout", "assign"] = "full"
    run_id: str
    manifest_key: str
    members_key: str
    coords_key: str
    result_key: str
    method: str = "kmeans"
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    vis_n_components: int = 2
    layout: bool = True
    block_rows: int = 65_536
    # assign: the source run's group ids and centroids (row-aligned; k x d is small
    # enough to ride in the spec) and the cosine threshold below which a row is noise
    centroid_ids: list[str] = Field(default_factory=list)
    centroids: list[list[float]] = Field(default_factory=list)
    assignment_threshold: float = 0.5
    # the layout on warmed, long-lived actors (ray_layout.py; False: this job's tasks),
    # how many per node (0: the node's CPUs)
    layout_workers: bool = True
    layout_workers_per_node: int = 0


class EngineResult(BaseModel):
    run_id: str
    n_clusters: int = 0
    sizes: list[int] = Field(default_factory=list)  # by group label 0..k-1 (assign: by the job's centroid_ids)
    centroids: list[list[float]] = Field(default_factory=list)
    noise_count: int = 0
    metrics: dict[str, float | None] = Field(default_factory=dict)
    estimator: str = ""
    algorithm_seconds: float = 0.0
    num_points: int = 0
    members_key: str | None = None
    coords_key: str | None = None
    block_nodes: list[str] = Field(default_factory=list)  # the Ray node id of each block task
    iterations: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)
    # per group (as `sizes`): members' mean/min cosine to the centroid and the
    # representatives (engine.CentroidSimilarity.records, reduced over the blocks)
    centroid_stats: list[dict[str, Any]] | None = None
    # the layout's workers: mode "actors" (warmed, ray_layout.py) or "tasks", how many
    # actors and how many this job created, whether the fit's worker had fitted before
    # (fit_warm), and how many blocks a worker transformed before it had compiled
    # (cold_blocks; every block of a task is cold)
    layout_workers: dict[str, Any] = Field(default_factory=dict)
    method_choice: dict[str, Any] | None = None  # what "auto" chose and why (ClusteringOutcome.explanation)


# ---------------------------------------------------------------------------- S3 I/O

# The settings a job's processes read S3 and the segments with: the clusterer passes
# them as the job's env_vars (app.ray_engine). A job's tasks read them from that
# environment; a layout worker (ray_layout.py) outlives the job that created it, keeps
# that job's environment, and so is handed the calling job's values with every call.
JOB_SETTINGS = ("s3_endpoint", "s3_access_key", "s3_secret_key", "s3_bucket", "s3_secure", "s3_region",
                "segment_cache_bytes", "segment_fetch_parallel")


def job_settings() -> dict[str, Any]:
    """This process's JOB_SETTINGS (from its environment)."""
    from clusterflow.settings import Settings

    return Settings().model_dump(include=set(JOB_SETTINGS))


def _store(values: dict[str, Any] | None = None):
    from clusterflow.settings import Settings
    from clusterflow.storage import S3ObjectStore

    return S3ObjectStore.from_settings(Settings(**(values or {})))


def put_json(store: ObjectStore, key: str, value: BaseModel) -> None:
    store.put_bytes(key, value.model_dump_json().encode(), content_type="application/json")


def get_json(store: ObjectStore, key: str, model: type[BaseModel]) -> BaseModel:
    return model.model_validate_json(store.get_bytes(key))


# Each Ray worker process keeps one segment cache per JOB_SETTINGS it was given; the
# processes of a node share its directory (entries are written under temporary names
# and renamed, so that is safe), so the k-means passes after the first read the node's
# local copies, not S3.
_CACHES: dict[str, Any] = {}


def _cache(values: dict[str, Any] | None = None):
    """The segment cache for `values` (JOB_SETTINGS; None: this process's environment)."""
    from clusterflow.segments import cache_from_settings
    from clusterflow.settings import Settings

    values = job_settings() if values is None else values
    key = json.dumps(values, sort_keys=True, default=str)
    if key not in _CACHES:
        _CACHES[key] = cache_from_settings(Settings(**values), "ray", _store(values))
    return _CACHES[key]


def read_block(block: dict, settings: dict[str, Any] | None = None) -> tuple[pa.Array, np.ndarray]:
    """One block's ids and vectors: `rows` (ascending) of one segment, read with
    `settings` (JOB_SETTINGS; None: this process's environment)."""
    from clusterflow.segments import SegmentRef

    ref = SegmentRef(**block["segment"])
    rows = np.asarray(block["rows"], dtype=np.int32)
    X = np.empty((len(rows), block["dimension"]), dtype=np.float32)
    ids = _cache(settings).read_rows_into(ref, block["dimension"], rows, X)
    return ids, X


def plan_blocks(manifest, block_rows: int) -> list[dict]:
    """The manifest's rows cut into blocks of at most `block_rows`, each a slice of one
    segment's rows; `start` is the block's first position in the manifest (what the
    seeded samples are drawn over)."""
    blocks, at = [], 0
    for ref, rows in manifest.parts():
        for start in range(0, len(rows), block_rows):
            part = rows[start:start + block_rows]
            blocks.append({"segment": {"segment_id": ref.segment_id, "key": ref.key, "num_rows": ref.num_rows},
                           "rows": part, "dimension": manifest.dimension, "start": at})
            at += len(part)
    return blocks


# ------------------------------------------------------------------- the block tasks

def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


# One BLAS thread per task: a task has one CPU (two threads were 3-12x slower here).
TASK_THREADS = 1


def _threads():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=TASK_THREADS)


def task_sample(block: dict, positions: np.ndarray, settings: dict[str, Any] | None = None) -> np.ndarray:
    """The rows of a seeded sample that fall in this block (positions within it)."""
    with _threads():
        _, X = read_block(block, settings)
        return X[positions]


def task_lloyd(block: dict, centres: np.ndarray):
    from services.clusterer.engine.blockwise import lloyd_partial

    with _threads():
        _, X = read_block(block)
        return lloyd_partial(X, centres), _node()


def task_members(block: dict, centres: np.ndarray):
    """Pass 1 after convergence: sums and counts per nearest centre (the members' means)."""
    from services.clusterer.engine.blockwise import label_partial

    with _threads():
        _, X = read_block(block)
        part = label_partial(X, centres)
        return part.sums, part.counts


def task_distances(block: dict, centres: np.ndarray, new_id: np.ndarray, centroids: np.ndarray,
                   sample_positions: np.ndarray):
    """Pass 2: the block's members (ids, final group ids, distances), the per-group
    distance sums, the members' cosine statistics (a CentroidSimilarity partial, by
    document id), and the silhouette sample's rows with their labels."""
    from services.clusterer.engine import centroid_similarity
    from services.clusterer.engine.blockwise import distance_partial, nearest

    with _threads():
        ids, X = read_block(block)
        labels = new_id[nearest(X, centres)[0]]
        part = distance_partial(X, labels, centroids)
        cosine = centroid_similarity(X, labels, centroids).with_ids(_ids_at(ids))
        return (ids, labels, part.distances, part.dist_sums, part.sq_sums,
                X[sample_positions], labels[sample_positions], cosine, _node())


def task_fit_layout(sample: np.ndarray, n_components: int, seed: int):
    """UMAP fitted on the sample (the landmarks), to transform every block with."""
    from services.clusterer.engine.layout import fit_landmarks

    with _threads():
        return fit_landmarks(sample, n_components, seed)


def task_transform(block: dict, model, settings: dict[str, Any] | None = None
                   ) -> tuple[pa.Array, np.ndarray, str, float]:
    """The block placed on the fitted layout, and the seconds the placing took (the
    read excluded: what the bench reports as the transform's own time)."""
    from services.clusterer.engine.layout import transform_rows

    with _threads():
        ids, X = read_block(block, settings)
        started = time.perf_counter()
        coords = transform_rows(model, X)
        return ids, coords, _node(), time.perf_counter() - started


def task_assign(block: dict, centroid_ids: list[str], centroids: np.ndarray, threshold: float):
    """The block's members assigned to the source run's centroids (the in-process
    assign rule, `assign.Assigner`), with the block's tally."""
    from services.clusterer.assign import Assigner

    with _threads():
        ids, X = read_block(block)
        assigner = Assigner(keys=centroid_ids, vectors=centroids, threshold=threshold)
        table = assigner.assign(ids, X)
        return (table, assigner.counts, assigner.noise, assigner.points, assigner.similarity_sum,
                assigner.similarity, _node())


def task_whole(spec: dict, blocks: list[dict]) -> dict:
    """A method that needs all its points at once: the in-process pipeline, in one task."""
    from services.clusterer import pipeline

    with _threads():
        parts = [read_block(b) for b in blocks]
        ids = pa.chunked_array([p[0] for p in parts], pa.string())
        X = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 1), np.float32)
        del parts
        clustering = pipeline.cluster(X, spec["method"], spec["params"], spec["seed"], threads=TASK_THREADS)
        summary = pipeline.summarize(X, clustering.labels, spec["seed"], threads=TASK_THREADS)
        coords = pipeline.layout(X, spec["vis_n_components"], spec["seed"],
                                 threads=TASK_THREADS) if spec["layout"] else None
        return {"ids": ids, "labels": clustering.labels, "distances": summary.distances, "coords": coords,
                "sizes": summary.sizes, "centroids": summary.centroids, "noise_count": summary.noise_count,
                "centroid_stats": summary.similarity.with_ids(_ids_at(ids)).records(),
                "metrics": summary.metrics, "n_clusters": clustering.n_clusters,
                "estimator": clustering.estimator + (f" after {clustering.reduction}" if clustering.reduction else ""),
                "seconds": clustering.seconds, "node": _node()}


def _ids_at(ids) -> Callable[[np.ndarray], list]:
    """Row positions -> the rows' document ids (CentroidSimilarity.with_ids)."""
    return lambda rows: ids.take(pa.array(rows)).cast(pa.string()).to_pylist()


# ------------------------------------------------------------------------- the driver

class Driver:
    """Runs one EngineJob on the Ray cluster this process is connected to."""

    def __init__(self, spec: EngineJob, store) -> None:
        import ray

        self.ray = ray
        self.spec = spec
        self.store = store
        self.nodes: list[str] = []
        self.seconds: dict[str, float] = {}  # the layout's phases (sample, fit, transform)
        self.layout_workers: dict[str, Any] = {}  # EngineResult.layout_workers
        self._job: dict[str, Any] | None = None  # _worker_job
        # SPREAD: Ray's default (hybrid) policy packs short tasks onto the driver's node
        # while it has room; measured here, every block of a 60K run ran on the head.
        # Blocks are independent reads of S3: spreading them uses every node's CPU and
        # cache. max_retries: a task lost with its node is run again elsewhere.
        remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False, scheduling_strategy="SPREAD")
        self.r_sample = remote(task_sample)
        self.r_lloyd = remote(task_lloyd)
        self.r_members = remote(task_members)
        self.r_distances = remote(task_distances)
        self.r_transform = remote(task_transform)
        self.r_assign = remote(task_assign)
        self.r_fit_layout = ray.remote(num_cpus=1, max_retries=3)(task_fit_layout)

    def _manifest(self):
        from clusterflow.segments import load_manifest

        return load_manifest(self.store, self.spec.manifest_key)

    def _sample(self, blocks: list[dict], n: int, size: int, seed: int, workers: list = ()
                ) -> tuple[np.ndarray, np.ndarray]:
        """A seeded sample of the run's rows (sorted manifest positions, and the rows),
        gathered by tasks from the blocks that hold them (by the layout `workers`, when
        given: no new processes; tasks again if one of them dies)."""
        positions = np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        parts, taken = [], []
        for b in blocks:
            lo, hi = np.searchsorted(positions, [b["start"], b["start"] + len(b["rows"])])
            if hi > lo:
                parts.append((b, positions[lo:hi] - b["start"]))
                taken.append(positions[lo:hi])
        try:
            rows = self.ray.get([workers[i % len(workers)].sample.remote(self._worker_job, *part)
                                 for i, part in enumerate(parts)]
                                if workers else [self.r_sample.remote(*part) for part in parts])
        except self.ray.exceptions.RayActorError as exc:
            log.warning("a layout worker died while sampling (%s): sampling in tasks", type(exc).__name__)
            rows = self.ray.get([self.r_sample.remote(*part) for part in parts])
        return np.concatenate(taken), (np.concatenate(rows) if rows else np.zeros((0, blocks[0]["dimension"]),
                                                                                  np.float32))

    def run(self) -> EngineResult:
        spec = self.spec
        manifest = self._manifest()
        blocks = plan_blocks(manifest, spec.block_rows)
        if spec.kind == "layout":
            return self._layout_only(manifest, blocks)
        if spec.kind == "assign":
            return self._assign(manifest, blocks)
        if spec.method != "kmeans":
            return self._whole(manifest, blocks)
        return self._kmeans(manifest, blocks)

    # -- kmeans, block by block

    def _kmeans(self, manifest, blocks: list[dict]) -> EngineResult:
        from services.clusterer.engine import CentroidSimilarity, compute_centroids, run_clustering, validate_params
        from services.clusterer.engine.algorithms import MINIBATCH_SEED_SAMPLE
        from services.clusterer.engine.blockwise import calinski_harabasz, davies_bouldin, \
            lloyd_update, size_order
        from services.clusterer.engine.metrics import SILHOUETTE_SAMPLE, _finite, _scorable
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        spec, ray, n = self.spec, self.ray, len(manifest)
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        params = validate_params("kmeans", spec.params)
        method_choice = None
        k_wanted = params.n_clusters
        # The init: exact k-means on a seeded sample, as the in-process engine seeds its
        # MiniBatch (engine/algorithms.py); "auto" is the in-process engine's own answer on
        # that sample (its k, and its start from the graph's communities), whose centroids
        # the blocks' Lloyd iterations then refine.
        size = max(MINIBATCH_SEED_SAMPLE, 20 * (k_wanted if isinstance(k_wanted, int) else 20))
        _, sample = self._sample(blocks, n, size, spec.seed)
        if isinstance(k_wanted, int):
            if k_wanted > n:
                raise ValueError(
                    f"algorithm_params.n_clusters ({k_wanted}) exceeds the number of points ({n}); lower it"
                )
            centres = KMeans(n_clusters=k_wanted, init=params.init, n_init=params.n_init, max_iter=params.max_iter,
                             tol=params.tol, random_state=params.random_state).fit(sample).cluster_centers_
        else:
            seeded = run_clustering(sample, "kmeans", spec.params, spec.seed)
            k_wanted, method_choice = seeded.n_clusters, seeded.explanation()
            centres = compute_centroids(sample, seeded.labels).vectors
        centres = centres.astype(np.float32)
        # scikit-learn's tolerance is relative to the data's mean variance (here the sample's)
        tol = params.tol * float(np.mean(np.var(sample, axis=0)))
        del sample
        seconds["init"] = time.perf_counter() - started

        iterations = 0
        for iterations in range(1, params.max_iter + 1):
            centres_ref = ray.put(centres)
            parts = ray.get([self.r_lloyd.remote(b, centres_ref) for b in blocks])
            self.nodes = [node for _, node in parts]
            total = parts[0][0]
            for part, _ in parts[1:]:
                total = total + part
            centres, shift = lloyd_update(centres, total)
            if shift <= tol:
                break
        seconds["lloyd"] = time.perf_counter() - started - seconds["init"]

        centres_ref = ray.put(centres)
        sums = np.zeros_like(centres, dtype=np.float64)
        counts = np.zeros(len(centres), dtype=np.int64)
        for s, c in ray.get([self.r_members.remote(b, centres_ref) for b in blocks]):
            sums += s
            counts += c
        new_id = size_order(counts)
        kept = np.flatnonzero(new_id >= 0)
        order = kept[np.argsort(new_id[kept])]
        centroids = (sums[order] / counts[order, None]).astype(np.float32)
        sizes = counts[order]

        sil_positions = np.arange(n) if n <= SILHOUETTE_SAMPLE else np.sort(
            np.random.default_rng(spec.seed).choice(n, size=SILHOUETTE_SAMPLE, replace=False))
        dist_sums = np.zeros(len(order))
        sq_sums = np.zeros(len(order))
        sil_X, sil_labels = [], []
        args = (centres_ref, ray.put(new_id), ray.put(centroids))
        cosine = CentroidSimilarity.empty(len(order))
        pending = []
        for b in blocks:
            lo, hi = np.searchsorted(sil_positions, [b["start"], b["start"] + len(b["rows"])])
            pending.append(self.r_distances.remote(b, *args, sil_positions[lo:hi] - b["start"]))
        nodes = []

        def members(out) -> pa.Table:
            ids, labels, dist, ds, ss, sx, sl, block_cosine, node = out
            nonlocal dist_sums, sq_sums, cosine
            nodes.append(node)
            cosine = cosine + block_cosine
            dist_sums += ds
            sq_sums += ss
            sil_X.append(sx)
            sil_labels.append(sl)
            return _members_table(ids, labels, dist)

        self._write_as_finished(self._as_finished(pending), spec.members_key, members, MEMBERS_SCHEMA)
        self.nodes += nodes
        seconds["members"] = time.perf_counter() - started - seconds["init"] - seconds["lloyd"]
        algorithm_seconds = time.perf_counter() - started

        sx, sl = np.concatenate(sil_X), np.concatenate(sil_labels)
        metrics = {"silhouette_score": _finite(silhouette_score(sx, sl)) if _scorable(sl) else None,
                   "davies_bouldin_index": None, "calinski_harabasz_score": None}
        if len(order) >= 2:
            metrics["davies_bouldin_index"] = _finite(davies_bouldin(centroids, sizes, dist_sums))
            ch = calinski_harabasz(centroids, sizes, sq_sums)
            metrics["calinski_harabasz_score"] = None if ch is None else _finite(ch)
        seconds["metrics"] = time.perf_counter() - started - algorithm_seconds
        coords_key = None
        if spec.layout:
            coords_key = self._layout(manifest, blocks)
            seconds["layout"] = time.perf_counter() - started - algorithm_seconds - seconds["metrics"]
            seconds.update(self.seconds)
        return EngineResult(
            run_id=spec.run_id, n_clusters=len(order), sizes=sizes.tolist(), centroids=centroids.tolist(),
            metrics=metrics, estimator=f"KMeans (Lloyd over {len(blocks)} blocks on Ray, sample-seeded)",
            algorithm_seconds=round(algorithm_seconds, 3), num_points=n, members_key=spec.members_key,
            coords_key=coords_key, block_nodes=self.nodes, iterations=iterations,
            seconds={k: round(v, 3) for k, v in seconds.items()}, centroid_stats=cosine.records(),
            layout_workers=self.layout_workers, method_choice=method_choice)

    # -- the layout: fit on a sample, transform the blocks in parallel

    def _layout(self, manifest, blocks: list[dict]) -> str:
        from services.clusterer.engine.layout import UMAP_FIT_MAX_POINTS

        spec = self.spec
        started = time.perf_counter()
        workers, created, reaped = self._layout_workers()
        self.layout_workers = {"mode": "actors" if workers else "tasks", "workers": len(workers),
                               "created": created, "reaped": reaped}
        _, sample = self._sample(blocks, len(manifest), UMAP_FIT_MAX_POINTS, spec.seed, workers)
        self.seconds["layout_sample"] = time.perf_counter() - started  # with finding or creating the workers
        model = self._fit(workers, sample)
        del sample
        self.seconds["layout_fit"] = time.perf_counter() - started - self.seconds["layout_sample"]
        task_seconds, cold = [], []

        def coords(out) -> pa.Table:
            ids, xy, node, seconds, *warm = out  # a worker's call says whether it had compiled
            self.nodes.append(node)
            task_seconds.append(seconds)
            cold.append(not warm or not warm[0])
            return _coords_table(ids, xy)

        results = self._on_workers(workers, blocks, model) if workers else \
            self._as_finished([self.r_transform.remote(b, model) for b in blocks])
        self._write_as_finished(results, spec.coords_key, coords)
        # wall time of the transform phase, and the tasks' own seconds (their sum over
        # the wall time is how many CPUs the phase kept busy)
        self.seconds["layout_transform"] = time.perf_counter() - started - self.seconds["layout_sample"] \
            - self.seconds["layout_fit"]
        self.seconds["layout_transform_task_sum"] = float(sum(task_seconds))
        self.seconds["layout_transform_task_max"] = float(max(task_seconds, default=0.0))
        self.layout_workers["cold_blocks"] = sum(cold)
        return spec.coords_key

    def _layout_workers(self) -> tuple[list, int, int]:
        """The warmed layout actors (ray_layout.py: with how many were created and
        reaped), or none: per-job tasks."""
        if not self.spec.layout_workers:
            return [], 0, 0
        from services.clusterer.ray_layout import workers

        try:
            return workers(self.ray, self.spec.layout_workers_per_node)
        except Exception:  # noqa: BLE001 - the actors are a speed-up: without them, tasks
            log.exception("no layout workers: the layout runs as this job's tasks")
            return [], 0, 0

    @property
    def _worker_job(self) -> dict[str, Any]:
        """What every layout worker call names (ray_layout.LayoutWorker): this job, and
        the settings to read its blocks with."""
        if self._job is None:
            self._job = {"id": self.ray.get_runtime_context().get_job_id(), "settings": job_settings()}
        return self._job

    def _fit(self, workers: list, sample: np.ndarray):
        """The landmark fit's model (an object ref): on a warmed worker, else a task."""
        if workers:
            model, info = workers[0].fit.options(num_returns=2).remote(self._worker_job, sample,
                                                                      self.spec.vis_n_components, self.spec.seed)
            try:
                self.layout_workers["fit_warm"] = self.ray.get(info)["warm"]
                return model
            except Exception as exc:  # noqa: BLE001 - the worker died: fit in a task
                log.warning("the layout worker's fit failed (%s): fitting in a task", type(exc).__name__)
        model = self.r_fit_layout.remote(sample, self.spec.vis_n_components, self.spec.seed)
        self.ray.wait([model], fetch_local=False)  # only timed here: the transforms wait for it anyway
        return model

    def _on_workers(self, workers: list, blocks: list[dict], model):
        """The blocks' transforms on the layout workers, each result as it finishes: each
        worker is handed the next block when one of its DEPTH calls returns (a faster
        node takes more blocks). A worker that dies is dropped and its blocks run as
        tasks (the ones it had, and the rest when no worker is left)."""
        from services.clusterer.ray_layout import DEPTH

        ray, queue, live = self.ray, list(blocks), list(workers)
        running: dict = {}  # ref -> (worker or None for a task, block)

        def hand(worker) -> None:
            if queue:
                block = queue.pop(0)
                ref = worker.transform.remote(self._worker_job, block, [model]) if worker is not None else \
                    self.r_transform.remote(block, model)
                running[ref] = (worker, block)

        for _ in range(DEPTH):
            for worker in live:
                hand(worker)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            worker, block = running.pop(done[0])
            try:
                out = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                log.warning("a layout worker died (%s): its blocks run as tasks", type(exc).__name__)
                if worker in live:
                    live.remove(worker)
                queue.insert(0, block)
                hand(None)
                if not live:
                    while queue:
                        hand(None)
                continue
            if worker is None or worker in live:
                hand(worker)
            yield out
        for worker in live:
            worker.forget.remote()  # the model's memory back (no need to wait)

    def _as_finished(self, pending: list):
        """The tasks' results, each as soon as its task finishes, whatever the order."""
        pending = list(pending)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])

    def _write_as_finished(self, results, key: str, to_table: Callable[[Any], pa.Table],
                           schema: pa.Schema | None = None) -> None:
        """One parquet file at `key` from the tasks' results (an iterable, in the order
        they finish: `_as_finished`), each written as soon as it comes: every row carries
        its document id, which is how every reader joins them. The driver holds one
        block's rows at a time. `schema`: the file's, also when no task returns rows
        (else the first table's)."""
        with tempfile.TemporaryDirectory(prefix="ray-job-") as tmp:
            path = os.path.join(tmp, key.rsplit("/", 1)[-1])
            writer = None if schema is None else pq.ParquetWriter(path, schema, compression="zstd")
            try:
                for out in results:
                    table = to_table(out)
                    if writer is None:
                        writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()
            if writer is not None:
                self.store.upload(key, path)

    def _layout_only(self, manifest, blocks: list[dict]) -> EngineResult:
        started = time.perf_counter()
        key = self._layout(manifest, blocks)
        seconds = {**self.seconds, "layout": time.perf_counter() - started}
        return EngineResult(run_id=self.spec.run_id, num_points=len(manifest), coords_key=key,
                            block_nodes=self.nodes, seconds={k: round(v, 3) for k, v in seconds.items()},
                            layout_workers=self.layout_workers)

    # -- assign: each block to the source run's centroids, in parallel

    def _assign(self, manifest, blocks: list[dict]) -> EngineResult:
        from services.clusterer.assign import MEMBERS_SCHEMA as ASSIGN_MEMBERS_SCHEMA
        from services.clusterer.engine import CentroidSimilarity

        spec = self.spec
        started = time.perf_counter()
        centroids = np.asarray(spec.centroids, dtype=np.float32)
        if centroids.ndim != 2 or len(centroids) != len(spec.centroid_ids) or len(centroids) == 0:
            raise ValueError(f"an assign job needs the source run's centroids, one per group id "
                             f"(got {len(spec.centroids)} centroids for {len(spec.centroid_ids)} ids)")
        if centroids.shape[1] != manifest.dimension:
            raise ValueError(f"documents have {manifest.dimension} dimensions but the source run's centroids "
                             f"have {centroids.shape[1]}")
        centroids_ref = self.ray.put(centroids)  # once in the object store, not once per task
        pending = [self.r_assign.remote(b, spec.centroid_ids, centroids_ref, spec.assignment_threshold)
                   for b in blocks]
        counts = np.zeros(len(centroids), dtype=np.int64)
        tally = {"noise": 0, "points": 0, "similarity": 0.0, "cosine": CentroidSimilarity.empty(len(centroids))}

        def members(out) -> pa.Table:
            table, block_counts, noise, points, similarity, cosine, node = out
            tally["cosine"] = tally["cosine"] + cosine
            counts[:] += block_counts
            tally["noise"] += noise
            tally["points"] += points
            tally["similarity"] += similarity
            self.nodes.append(node)
            return table

        self._write_as_finished(self._as_finished(pending), spec.members_key, members, ASSIGN_MEMBERS_SCHEMA)
        points = tally["points"]
        return EngineResult(
            run_id=spec.run_id, n_clusters=len(centroids), sizes=counts.tolist(), noise_count=tally["noise"],
            metrics={"mean_similarity": tally["similarity"] / points if points else None},
            estimator=f"nearest centroid over {len(blocks)} blocks on Ray",
            algorithm_seconds=round(time.perf_counter() - started, 3), num_points=points,
            members_key=spec.members_key, block_nodes=self.nodes,
            seconds={"assign": round(time.perf_counter() - started, 3)}, centroid_stats=tally["cosine"].records())

    # -- the others: one task with the memory the matrix needs

    def _whole(self, manifest, blocks: list[dict]) -> EngineResult:
        spec, ray = self.spec, self.ray
        need = len(manifest) * manifest.dimension * 4
        task = ray.remote(num_cpus=1, max_retries=1, memory=int(need * 4 + 512 * 2**20))(task_whole)
        out = ray.get(task.remote(spec.model_dump(), blocks))
        self.nodes = [out["node"]]
        with tempfile.TemporaryDirectory(prefix="ray-job-") as tmp:
            path = os.path.join(tmp, "members.parquet")
            pq.write_table(_members_table(out["ids"], out["labels"], out["distances"]), path, compression="zstd")
            self.store.upload(spec.members_key, path)
            coords_key = None
            if out["coords"] is not None:
                pq.write_table(_coords_table(out["ids"], out["coords"]), path, compression="zstd")
                self.store.upload(spec.coords_key, path)
                coords_key = spec.coords_key
        return EngineResult(
            run_id=spec.run_id, n_clusters=out["n_clusters"], sizes=list(out["sizes"]),
            centroids=np.asarray(out["centroids"]).tolist(), noise_count=out["noise_count"],
            metrics=out["metrics"], estimator=out["estimator"] + " (one Ray task)",
            algorithm_seconds=round(out["seconds"], 3), num_points=len(manifest), members_key=spec.members_key,
            coords_key=coords_key, block_nodes=self.nodes, centroid_stats=out["centroid_stats"])


def _members_table(ids, labels: np.ndarray, distances: np.ndarray) -> pa.Table:
    from services.clusterer.engine import group_key

    distinct, positions = np.unique(labels, return_inverse=True)
    keys = pa.array([group_key(int(c)) for c in distinct], pa.string()).take(pa.array(positions.ravel()))
    dist = np.asarray(distances, dtype=np.float32)
    return pa.table({"document_id": ids.cast(pa.string()),
                     "cluster_id": keys,
                     # noise has no centroid: a null distance, as the in-process members
                     "distance_to_centroid": pa.array(dist, mask=np.isnan(dist))}, schema=MEMBERS_SCHEMA)


def _coords_table(ids, coords: np.ndarray) -> pa.Table:
    # float32 columns, as the in-process path writes its layout's coordinates
    coords = np.asarray(coords, dtype=np.float32)
    columns = {"document_id": ids.cast(pa.string()), "x": pa.array(coords[:, 0]), "y": pa.array(coords[:, 1])}
    if coords.shape[1] == 3:
        columns["z"] = pa.array(coords[:, 2])
    return pa.table(columns)


def main(argv: list[str]) -> int:
    import ray

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = _store()
    spec = get_json(store, argv[1], EngineJob)
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), logging_level=logging.WARNING)
    started = time.perf_counter()
    result = Driver(spec, store).run()
    put_json(store, spec.result_key, result)
    log.info("run %s: engine done in %.1f s on nodes %s", spec.run_id, time.perf_counter() - started,
             sorted(set(result.block_nodes)))
    print(json.dumps({"run_id": spec.run_id, "result_key": spec.result_key}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
