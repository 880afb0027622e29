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
"""
from __future__ import annotations

import argparse
import asyncio
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

from bench.common import K, make_data  # noqa: E402
from clusterflow.segments import RunVectors, SegmentCache, load_manifest  # noqa: E402
from clusterflow.settings import get_settings  # noqa: E402
from clusterflow.storage import S3ObjectStore  # noqa: E402
from services.clusterer import pipeline  # noqa: E402
from services.clusterer.app import ray_engine  # noqa: E402
from tests.support.segments import put_run  # noqa: E402


def ray_processes() -> list[psutil.Process]:
    """Every process of this project's Ray nodes: the sessions of the two
    `ray start --block` processes servers.sh started (their pid files)."""
    run = Path(os.environ.get("CLUSTERFLOW_HOME", Path.home() / ".clusterflow")) / "run"
    leaders = {int((run / f"{n}.pid").read_text()) for n in ("ray-head", "ray-worker") if (run / f"{n}.pid").exists()}
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) in leaders:
                out.append(p)
        except (ProcessLookupError, PermissionError):
            continue
    return out


class PeakRss(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for p in ray_processes():
                try:
                    name = f"{p.pid}:{' '.join(p.cmdline()[:3])[-60:]}"
                    self.peaks[name] = max(self.peaks.get(name, 0.0), p.memory_info().rss / 2**20)
                except psutil.Error:
                    continue
            self.stop.wait(0.5)


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
    args = parser.parse_args()
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
                    "in_process_peak_mb": round(float(open("/proc/self/status").read().split("VmHWM:")[1]
                                                      .split()[0]) / 1024 - base),
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
