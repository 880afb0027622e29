"""The Ray engine beside the in-process engine on the same data, in the same run.

    eval "$(deploy/local/servers.sh env)"; deploy/local/servers.sh start ray
    .venv/bin/python bench/ray_engine.py --sizes 100000 300000 [--layout]
    .venv/bin/python bench/ray_engine.py --sizes 1000000 --layout-only   # the 1M-point layout
    .venv/bin/python bench/ray_engine.py --sizes 1000000 --layout-only --ray-runs 2  # cold, then warm

For each size: unit vectors around K=20 directions (bench/common.py), put into S3 as
segments of 170K rows with a manifest (setup, not measured). In-process: what the
clusterer does for a run (read the vectors through the segment cache, cluster, metrics
and centroids, the layout with --layout) in this process. Ray: the same run as a Ray
job on the project's 2-node cluster, submit to result (job start, block tasks, members
and coordinates written to S3). ARI between the two labelings joined by document id;
peak RSS of this process (in-process engine) and of every process of the Ray nodes
(sampled every 0.5 s) beside the dataset's size. The Ray jobs run first (`--ray-runs`
of them, each a line as it ends: the second on the layout workers the first warmed),
then the in-process engine. The last line is one JSON object.

    .venv/bin/python bench/ray_engine.py --service --sizes 5000000 [--import-chunk 1000000]
        [--local-max 1000000] [--lock /work/heavy.lock]

--service: the same comparison through the service. The documents go in through the
bulk import (`POST .../documents/import`, files of --import-chunk rows written piece by
piece, each deleted once imported), then a cluster (kmeans k=20, layout deferred,
keyword labels) is executed through REST with the five services on CLUSTERFLOW_ENGINE=ray,
polled to COMPLETED, and its result read (the execution, a page of its members). The
in-process engine then runs on the run's own manifest in this process, up to
--local-max points (it holds the matrix, ~4x the dataset at peak: 5M x 384 would want
~30 GB). Peak RSS (VmHWM, sampled every 0.5 s, reset at each phase) of every process of
each group: the gateway, preparer, clusterer, labeler and status services, the two Ray
nodes (the job's driver and tasks included), PostgreSQL, SeaweedFS and Kafka, for the
import and for the run, beside the dataset's size. --lock takes that file's flock around
each import file and around the run (the box's rule for heavy work).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import psutil
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    DIM, K, fresh_settings, import_documents, make_data, make_pieces, rss_mb, running_stack, write_import_file)
from clusterflow.segments import RunVectors, SegmentCache, load_manifest  # noqa: E402
from clusterflow.settings import get_settings  # noqa: E402
from clusterflow.storage import S3ObjectStore  # noqa: E402
from services.clusterer import pipeline  # noqa: E402
from services.clusterer.app import ray_engine  # noqa: E402
from tests.support.segments import put_run  # noqa: E402


def home_run_dir() -> Path:
    return Path(os.environ.get("CLUSTERFLOW_HOME", Path.home() / ".clusterflow")) / "run"


def server_sessions(names=("ray-head", "ray-worker")) -> dict[str, int]:
    """{server: its session id}: servers.sh starts each server as a session leader and
    keeps its pid (its processes, a Ray node's workers and job drivers included, are in
    that session)."""
    run = home_run_dir()
    return {n: int((run / f"{n}.pid").read_text()) for n in names if (run / f"{n}.pid").exists()}


def session_processes(groups: dict[str, int]) -> list[tuple[str, psutil.Process]]:
    """(group, process) of every process in the groups' sessions ({group: its leader's
    pid}), and of the leaders' descendants (PostgreSQL's backends start sessions of
    their own)."""
    by_sid = {sid: name for name, sid in groups.items()}
    out, seen = [], set()
    for p in psutil.process_iter():
        try:
            sid = os.getsid(p.pid)
        except (ProcessLookupError, PermissionError):
            continue
        if sid in by_sid:
            out.append((by_sid[sid], p))
            seen.add(p.pid)
    for name, leader in groups.items():
        try:
            children = psutil.Process(leader).children(recursive=True)
        except psutil.Error:
            continue
        out.extend((name, c) for c in children if c.pid not in seen)
    return out


def ray_processes() -> list[psutil.Process]:
    """Every process of this project's Ray nodes."""
    return [p for _, p in session_processes(server_sessions())]


def _hwm_mb(pid: int) -> float | None:
    """`rss_mb`'s peak, or None where it cannot be read (the process gone, or one with
    no memory of its own)."""
    try:
        return rss_mb(pid)
    except (OSError, KeyError, ValueError):
        return None


class PeakRss(threading.Thread):
    """Every 0.5 s, the peak RSS of each process of `groups` ({group: session id}; the
    Ray nodes' by default): VmHWM where it can be read (the true peak, between samples
    too), else the RSS sampled. `reset()` starts a new phase (VmHWM cleared)."""

    def __init__(self, groups: dict[str, int] | None = None) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.peaks: dict[str, float] = {}
        self.group_of: dict[str, str] = {}
        self.stop = threading.Event()

    def reset(self) -> None:
        for _, p in session_processes(self.groups or server_sessions()):
            with contextlib.suppress(OSError):
                Path(f"/proc/{p.pid}/clear_refs").write_text("5")
        self.peaks, self.group_of = {}, {}

    def sample(self) -> None:
        for group, p in session_processes(self.groups or server_sessions()):
            try:
                name = f"{p.pid}:{' '.join(p.cmdline()[:3])[-60:]}"
                mb = _hwm_mb(p.pid) or p.memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.peaks[name] = max(self.peaks.get(name, 0.0), mb)
            self.group_of[name] = group

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.5)

    def by_group(self) -> dict[str, dict]:
        """{group: its largest process's peak (MB) and command line, and how many processes}."""
        out: dict[str, dict] = {}
        for name, mb in self.peaks.items():
            g = out.setdefault(self.group_of[name], {"peak_mb": 0.0, "process": None, "processes": 0})
            g["processes"] += 1
            if mb > g["peak_mb"]:
                g["peak_mb"], g["process"] = round(mb), name
        return out


def in_process(store, manifest_key: str, layout: bool, seed: int, layout_only: bool = False
               ) -> tuple[float, pl.DataFrame | None]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ids, X = RunVectors(load_manifest(store, manifest_key), SegmentCache(store, tmp, 2**34)).load()
        if layout_only:  # what a deferred layout computes in the clusterer's process
            pipeline.layout(X, 2, seed)
            return time.perf_counter() - started, None
        clustering = pipeline.cluster(X, "kmeans", {"n_clusters": K}, seed)
        pipeline.summarize(X, clustering.labels, seed)
        if layout:
            pipeline.layout(X, 2, seed)
    seconds = time.perf_counter() - started
    return seconds, pl.DataFrame({"document_id": pl.Series(ids), "local": clustering.labels})


def ray_run(engine, store, run_id: str, key: str, args) -> dict:
    """One Ray job on the run's data, submit to result, its figures (printed as it ends)."""
    job = engine.job_for("bench", "ray", run_id, kind="layout" if args.layout_only else "full", manifest_key=key,
                         method="kmeans", params={"n_clusters": K}, seed=args.seed, layout=args.layout)
    monitor = PeakRss()
    monitor.start()
    started = time.perf_counter()

    async def noop() -> None:
        return None

    result = asyncio.run(engine.run(job, noop))
    ray_s = time.perf_counter() - started
    monitor.stop.set()
    monitor.join()
    out = {"ray_s": round(ray_s, 1), "ray_engine_s": result.seconds, "ray_iterations": result.iterations,
           "ray_nodes": len(set(result.block_nodes)), "ray_layout_workers": result.layout_workers,
           "ray_peak_process_mb": round(max(monitor.peaks.values(), default=0.0)),
           "ray_peak_process": max(monitor.peaks, key=monitor.peaks.get, default=None), "members_key": job.members_key}
    if args.layout_only:
        out["ray_coords_rows"] = store.get_parquet(job.coords_key).height
    print(json.dumps({"run_id": run_id, **out}), flush=True)
    return out


SERVERS = ("ray-head", "ray-worker", "postgres", "s3", "kafka")


@contextlib.contextmanager
def heavy(lock: str | None):
    """The box's lock for heavy work, held for one phase (None: no lock)."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _phase(monitor: PeakRss) -> dict[str, dict]:
    monitor.sample()
    return monitor.by_group()


def service(args) -> None:
    """--service: see the module's docstring."""
    # a database (and topics) per size list: two such benches may share the servers
    settings = fresh_settings("clusterflow_bench_scale_" + "_".join(map(str, args.sizes))).model_copy(
        update={"engine": "ray", "clusterer_warm_up": False})  # kmeans on Ray compiles nothing here
    store = S3ObjectStore.from_settings(settings)
    rows = []
    with running_stack(settings) as (stack, client), tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        groups = {**server_sessions(SERVERS),
                  **{name.rsplit(".", 1)[-1]: p.pid for name, p in stack.processes.items()}}
        monitor = PeakRss(groups)
        monitor.start()
        for n in args.sizes:
            dataset_mb = n * DIM * 4 / 2**20
            row: dict = {"n": n, "dim": DIM, "k": K, "dataset_mb": round(dataset_mb), "bound_mb": round(dataset_mb / 2)}
            collection_id, import_s, files = None, 0.0, []
            monitor.reset()
            for first in range(0, n, args.import_chunk):
                size = min(args.import_chunk, n - first)
                path = os.path.join(tmp, "import.parquet")
                write_import_file(path, make_pieces(size, first, seed=n))
                with heavy(args.lock):
                    collection_id, seconds, task = import_documents(client, f"scale {n}", path, collection_id)
                os.unlink(path)
                import_s += seconds
                files.append({"rows": size, "seconds": round(seconds, 1),
                              "segments": task["additional_data"]["import"]["segments"]})
                print(f"{n}: imported rows {first:,}-{first + size:,} in {seconds:.1f} s", flush=True)
            row |= {"import_s": round(import_s, 1), "import_docs_per_s": round(n / import_s), "import_files": files,
                    "import_peaks": _phase(monitor)}
            cluster = client.create_cluster(collection_ids=[collection_id], cluster_name=f"scale {n}",
                                            clustering_method="kmeans", algorithm_params={"n_clusters": K},
                                            defer_visualization=True)["cluster_id"]
            with heavy(args.lock):
                monitor.reset()
                started = time.perf_counter()
                task = client.execute(cluster)
                done = client.wait(task["task_id"], timeout=3600, interval=0.5, max_interval=2.0)
                run_s = time.perf_counter() - started
                assert done["status"] == "COMPLETED", done
                run_id = task["additional_data"]["run_id"]
                # COMPLETED may come before the labels (the projector merges them when
                # they arrive): the labeler's work is part of the run's memory
                execution = client.execution(cluster, run_id)
                while not all(c.get("label") for c in execution.get("centroids") or []) \
                        and time.perf_counter() - started < run_s + 900:
                    time.sleep(2)
                    execution = client.execution(cluster, run_id)
                labeled_s = time.perf_counter() - started
                page = client.execution_data(cluster, run_id, include_members=True, limit=100)
                row |= {"service_s": round(run_s, 1), "labeled_s": round(labeled_s, 1), "num_points": execution.get("num_points"),
                        "num_clusters": execution.get("num_clusters"), "members_total": page["pagination"]["total"],
                        "estimator": (done.get("additional_data") or {}).get("estimator"),
                        "labels": sorted({c.get("label") or "" for c in execution.get("centroids") or []})[:3],
                        "run_peaks": _phase(monitor)}
                print(f"{n}: service run {run_s:.1f} s, {row['num_points']:,} points", flush=True)
                if n <= args.local_max:
                    base = psutil.Process().memory_info().rss / 2**20
                    Path("/proc/self/clear_refs").write_text("5")
                    local_s, local = in_process(store, f"bench/{cluster}/{run_id}/manifest.parquet", False, 42)
                    # the run's members straight from S3: a page at a time through REST would take minutes
                    members = store.get_parquet(f"bench/{cluster}/{run_id}/members.parquet",
                                                ["document_id", "cluster_id"])
                    joined = local.join(members, on="document_id")
                    row |= {"in_process_s": round(local_s, 1), "in_process_peak_mb": round(_hwm_mb(os.getpid()) - base),
                            "in_process_process_peak_mb": round(_hwm_mb(os.getpid())),
                            "ari_vs_in_process": round(adjusted_rand_score(joined["local"], joined["cluster_id"]), 4),
                            "service_over_in_process": round(run_s / local_s, 2)}
                    del local, members, joined
                else:
                    row["in_process"] = (f"not run: {n:,} points are over --local-max {args.local_max:,} (it holds "
                                         f"the matrix, ~4x the dataset at peak: ~{4 * dataset_mb / 1024:.0f} GB)")
            peaks = {g: v["peak_mb"] for phase in ("import_peaks", "run_peaks") for g, v in row[phase].items()}
            worst = max(peaks, key=peaks.get)
            row |= {"largest_group": worst, "largest_peak_mb": peaks[worst],
                    "under_bound": all(v < dataset_mb / 2 for v in peaks.values())}
            print(json.dumps(row), flush=True)
            rows.append(row)
            # the objects only: deleting a collection of millions through REST outlasts the
            # client's timeout, and the database goes with the next fresh_settings
            store.delete_prefix(f"bench/segments/{collection_id}/")
            store.delete_prefix(f"bench/{cluster}/")
        monitor.stop.set()
    print(json.dumps({"benchmark": "ray_engine", "mode": "service", "runs": rows}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--layout", action="store_true")
    parser.add_argument("--layout-only", action="store_true",
                        help="the layout alone (a deferred layout's job) beside pipeline.layout in this process")
    parser.add_argument("--skip-local", action="store_true", help="Ray only (sizes the process cannot hold)")
    parser.add_argument("--ray-runs", type=int, default=1,
                        help="Ray jobs one after the other on the same data (2: cold, then warm layout workers)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--service", action="store_true", help="through the service (see the docstring)")
    parser.add_argument("--import-chunk", type=int, default=1_000_000, help="--service: rows per import file")
    parser.add_argument("--local-max", type=int, default=1_000_000,
                        help="--service: the in-process engine up to this many points")
    parser.add_argument("--lock", help="--service: flock this file around each heavy phase")
    args = parser.parse_args()
    if args.service:
        return service(args)
    settings = get_settings().model_copy(update={"engine": "ray"})
    store = S3ObjectStore.from_settings(settings)
    store.ensure_bucket()
    engine = ray_engine(settings, store)
    rows = []
    for n in args.sizes:
        X = make_data(n)
        ids = [f"b{n}-{i}" for i in range(n)]
        run_id = f"bench_{uuid.uuid4().hex[:8]}"
        key = put_run(store, "bench", "ray", run_id, ids, X, rows_per_segment=170_000)
        dataset_mb = X.nbytes / 2**20
        del X
        row = {"n": n, "dim": 384, "k": K, "layout": args.layout or args.layout_only, "layout_only": args.layout_only,
               "dataset_mb": round(dataset_mb)}
        runs = [ray_run(engine, store, run_id if i == 0 else f"{run_id}_{i}", key, args) for i in range(args.ray_runs)]
        row |= runs[-1]  # with --ray-runs 2: the second job, on the workers the first warmed
        if args.ray_runs > 1:
            row["ray_runs"] = [{k: r[k] for k in ("ray_s", "ray_engine_s", "ray_layout_workers")} for r in runs]
        if not args.skip_local:  # after the Ray jobs, so that a run cut short keeps their figures
            base = psutil.Process().memory_info().rss / 2**20
            local_s, local = in_process(store, key, args.layout, args.seed, args.layout_only)
            row |= {"in_process_s": round(local_s, 1),
                    "in_process_peak_mb": round(rss_mb(os.getpid()) - base),
                    "ray_over_in_process": round(row["ray_s"] / local_s, 2)}
            if not args.layout_only:
                members = store.get_parquet(row.pop("members_key"), ["document_id", "cluster_id"])
                joined = local.join(members, on="document_id")
                row["ari_vs_in_process"] = round(adjusted_rand_score(joined["local"], joined["cluster_id"]), 4)
        row.pop("members_key", None)
        print(json.dumps(row), flush=True)
        rows.append(row)
        for i in range(args.ray_runs):
            store.delete_prefix(f"bench/ray/{run_id if i == 0 else f'{run_id}_{i}'}/")
        store.delete_prefix("bench/segments/ray/")
    print(json.dumps({"benchmark": "ray_engine", "runs": rows}))


if __name__ == "__main__":
    main()
