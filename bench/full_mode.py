"""Benchmark: full-mode runs end to end (execute -> COMPLETED) beside the bare engine
call on the same data in this process, where the difference goes, and the clusterer's
peak memory.

    eval "$(deploy/local/servers.sh env)"
    .venv/bin/python bench/full_mode.py --sizes 10000 100000 [--repeat 3] [--method kmeans] [--layout]

Documents are loaded straight into Postgres with COPY (setup, not measured); the
measured path is the service's: REST execute, Kafka, the preparer's COPY export into the
dataset file and its upload to S3, the clusterer (download, read, the engine, results to
S3), the status projector, task polling (every 0.05 s). "bare" is the same scikit-learn
work (the engine's clustering, metrics, centroids and distances; plus the UMAP layout
with --layout) on the same array, timed here in one process. Each size runs `--repeat`
times; figures are medians (the ratio is the median of the per-run ratios).

The overhead is split by the run's status events: "prepare" (the preparer: count, COPY
export, upload), "load" (the clusterer: download and read the dataset), "results"
(lineage, writing the results, ExecutionClustered, the projection), and "hops" (the
rest: the REST call, Kafka deliveries, polling); "engine" is the service's own clustering
and metrics stages, to set beside "bare".

Peak memory is the clusterer process's VmHWM (reset before each run) beside the
dataset's float32 size, as is and above the process's idle RSS (Python, numpy,
scikit-learn, polars, pyarrow and the Kafka client: ~280 MB).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from services.clusterer import pipeline
from services.clusterer.engine import warm_up

from common import DIM, K, fresh_settings, load, make_data, rss_mb, running_stack, stage_times  # noqa: E402

STAGES = ("prepare", "load", "engine", "results", "hops")


def bare(X: np.ndarray, method: str, params: dict, layout: bool) -> float:
    """The engine's work in this process (numba compiled beforehand, as in the clusterer)."""
    t0 = time.perf_counter()
    outcome = pipeline.cluster(X, method, params, 42)
    pipeline.summarize(X, outcome.labels, 42)
    if layout:
        pipeline.layout(X, 2, 42)
    return time.perf_counter() - t0


def split(at: dict, completed, started: float, seen: float) -> dict[str, float]:
    """The run's wall-clock time cut at its status events (all times in epoch seconds)."""
    t = {key: value.timestamp() for key, value in at.items()}
    prepare = t[("preparer", "prepared")] - t[("preparer", "preparing")]
    load_s = t[("clusterer", "clustering")] - t[("clusterer", "loading")]
    engine = t[("clusterer", "lineage")] - t[("clusterer", "clustering")]
    results = completed.timestamp() - t[("clusterer", "lineage")]
    hops = (seen - started) - prepare - load_s - engine - results
    return {"prepare": prepare, "load": load_s, "engine": engine, "results": results, "hops": hops}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per size (medians are reported)")
    parser.add_argument("--method", default="kmeans")
    parser.add_argument("--layout", action="store_true", help="include the UMAP layout (else deferred)")
    args = parser.parse_args()
    params = {"n_clusters": K} if args.method == "kmeans" else {"min_cluster_size": 50}

    settings = fresh_settings("clusterflow_bench")
    if args.layout or args.method == "hdbscan":
        warm_up()
    rows = []
    with running_stack(settings) as (stack, client):
        # A warm-up run pays imports and consumer-group joins once; before each measured
        # run the clusterer's peak-RSS counter is reset (clear_refs 5), so one process
        # serves every size and its peak is that run's.
        clusterer = stack.processes["services.clusterer"].pid
        for n in [2_000, *args.sizes]:
            X = make_data(n)
            collection_id = f"col_bench_{n}"
            load(settings, collection_id, X)
            cluster = client.create_cluster(collection_ids=[collection_id], cluster_name=f"bench {n}",
                                            clustering_method=args.method, algorithm_params=params,
                                            defer_visualization=not args.layout)
            runs = []
            for _ in range(1 if n == 2_000 else args.repeat):
                Path(f"/proc/{clusterer}/clear_refs").write_text("5")
                idle_mb = rss_mb(clusterer, "VmRSS")
                started, t0 = time.time(), time.perf_counter()
                task = client.execute(cluster["cluster_id"])
                done = client.wait(task["task_id"], timeout=3600, interval=0.05, max_interval=0.05)
                service_s, seen = time.perf_counter() - t0, time.time()
                assert done["status"] == "COMPLETED", done
                peak_mb = rss_mb(clusterer)
                bare_s = bare(X, args.method, params, args.layout)
                stages = split(*stage_times(settings, task["additional_data"]["run_id"]), started, seen)
                runs.append((service_s, bare_s, service_s / bare_s, peak_mb, idle_mb, stages))
                print(f"{n:>8}: service {service_s:.2f}s, bare {bare_s:.2f}s, ratio {service_s / bare_s:.2f}, "
                      + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()), flush=True)
            if n != 2_000:
                rows.append((n, runs, X.nbytes / 2**20))

    med = statistics.median
    print(f"\nmethod={args.method} dim={DIM} layout={'inline' if args.layout else 'deferred'} "
          f"repeat={args.repeat} (medians)")
    print(f"{'docs':>8} {'service s':>10} {'bare s':>7} {'ratio':>6} "
          + " ".join(f"{s:>8}" for s in STAGES)
          + f" {'peak MB':>8} {'idle MB':>8} {'data MB':>8} {'peak/data':>9} {'(peak-idle)/data':>16}")
    for n, runs, data in rows:
        peak, idle = max(r[3] for r in runs), med(r[4] for r in runs)
        print(f"{n:>8} {med(r[0] for r in runs):>10.2f} {med(r[1] for r in runs):>7.2f} "
              f"{med(r[2] for r in runs):>6.2f} "
              + " ".join(f"{med(r[5][s] for r in runs):>8.2f}" for s in STAGES)
              + f" {peak:>8.0f} {idle:>8.0f} {data:>8.0f} {peak / data:>9.2f} {(peak - idle) / data:>16.2f}")


if __name__ == "__main__":
    main()
