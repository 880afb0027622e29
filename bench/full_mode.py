"""Benchmark: runs over segments, end to end (execute -> COMPLETED), beside the bare
engine call on the same data in this process.

    eval "$(deploy/local/servers.sh env)"
    .venv/bin/python bench/full_mode.py --sizes 100000 1000000 [--repeat 3] [--method kmeans] [--layout]

Per size, on documents loaded through the import endpoint (`POST .../documents/import`,
which writes their segments as it imports: sealing is part of the import's time, and
no tail is left for the first run to seal):
- (e) import: the upload and the import task, documents per second;
- (a) the first run of a cluster (kmeans k=20, layout deferred): the service beside the
  same engine work done bare (clustering, metrics, centroids, distances; plus the UMAP
  layout with --layout); its "prepare" (the preparer: selection, manifest) and "load"
  (the clusterer: fetch the segments it lacks, read the run's rows);
- (b) `--repeat` re-runs of the same cluster, the collection unchanged (medians);
- (c) a run whose filter (payload `bucket` = 0) selects 10 % of the collection: its
  prepare + load beside (a)'s;
- (d) an assign run over every document, documents per second execute -> COMPLETED;
- the clusterer's peak memory above its idle RSS (VmHWM reset before each run) beside
  the run's float32 data.
Times come from the run's status events (`common.stage_times`). The last line is the
figures as one JSON object.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from services.clusterer import pipeline
from services.clusterer.engine import warm_up

from common import (  # noqa: E402  (bench/ is the script directory)
    DIM,
    K,
    fresh_settings,
    import_documents,
    last_line,
    make_data,
    rss_mb,
    running_stack,
    stage_times,
    write_import_file,
)


def bare(X: np.ndarray, method: str, params: dict, layout: bool) -> float:
    """The engine's work in this process (numba compiled beforehand, as in the clusterer)."""
    t0 = time.perf_counter()
    outcome = pipeline.cluster(X, method, params, 42)
    pipeline.summarize(X, outcome.labels, 42)
    if layout:
        pipeline.layout(X, 2, 42)
    return time.perf_counter() - t0


def spans(settings, run_id: str) -> dict[str, float]:
    at, _ = stage_times(settings, run_id)
    t = {key: value.timestamp() for key, value in at.items()}
    return {"prepare": t[("preparer", "prepared")] - t[("preparer", "preparing")],
            "load": t[("clusterer", "clustering")] - t[("clusterer", "loading")]}


class Runner:
    def __init__(self, client, settings, clusterer_pid: int) -> None:
        self.client, self.settings, self.pid = client, settings, clusterer_pid

    def run(self, cluster_id: str, **overrides) -> dict:
        """One run: seconds execute -> COMPLETED, its stages, the clusterer's peak above idle."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        idle = rss_mb(self.pid, "VmRSS")
        t0 = time.perf_counter()
        task = self.client.execute(cluster_id, **overrides)
        done = self.client.wait(task["task_id"], timeout=3600, interval=0.05, max_interval=0.05)
        seconds = time.perf_counter() - t0
        assert done["status"] == "COMPLETED", done
        run_id = task["additional_data"]["run_id"]
        out = {"seconds": seconds, "peak_above_idle_mb": rss_mb(self.pid) - idle, "run_id": run_id,
               "num_points": done["outputs"][0]["num_points"]}
        if overrides.get("mode") != "assign":
            out.update(spans(self.settings, run_id))
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--repeat", type=int, default=3, help="re-runs of the unchanged collection (medians)")
    parser.add_argument("--method", default="kmeans")
    parser.add_argument("--layout", action="store_true", help="include the UMAP layout (else deferred)")
    args = parser.parse_args()
    params = {"n_clusters": K} if args.method == "kmeans" else {"min_cluster_size": 50}
    med = statistics.median

    # The in-process engine, whatever the size: this compares the service with the same
    # engine called bare (bench/ray_engine.py compares the Ray path).
    settings = fresh_settings("clusterflow_bench").model_copy(update={"engine": "local"})
    if args.layout or args.method == "hdbscan":
        warm_up()
    figures: dict = {"method": args.method, "dim": DIM, "layout": "inline" if args.layout else "deferred",
                     "repeat": args.repeat, "sizes": {}}
    with running_stack(settings) as (stack, client), tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        runner = Runner(client, settings, stack.processes["services.clusterer"].pid)
        for n in [2_000, *args.sizes]:  # 2,000: a warm-up (imports, consumer joins), not reported
            X = make_data(n)
            path = os.path.join(tmp, f"docs-{n}.parquet")
            write_import_file(path, X)
            collection_id, import_s, _ = import_documents(client, f"bench {n}", path)
            os.unlink(path)
            cluster = client.create_cluster(collection_ids=[collection_id], cluster_name=f"bench {n}",
                                            clustering_method=args.method, algorithm_params=params,
                                            defer_visualization=not args.layout)["cluster_id"]
            first = runner.run(cluster)
            bare_s = bare(X, args.method, params, args.layout)
            again = [runner.run(cluster) for _ in range(args.repeat)]
            filtered_cluster = client.create_cluster(
                collection_ids=[collection_id], cluster_name=f"bench {n} 10%", clustering_method=args.method,
                algorithm_params=params, defer_visualization=not args.layout,
                filters={"AND": [{"field": "bucket", "operator": "eq", "value": 0}]})["cluster_id"]
            filtered = runner.run(filtered_cluster)
            assign = runner.run(cluster, mode="assign")
            data_mb = X.nbytes / 2**20
            row = {
                "import_s": round(import_s, 2), "import_docs_per_s": round(n / import_s),
                "first_s": round(first["seconds"], 2), "bare_s": round(bare_s, 2),
                "first_ratio": round(first["seconds"] / bare_s, 3),
                "first_prepare_load_s": round(first["prepare"] + first["load"], 3),
                "first_prepare_s": round(first["prepare"], 3), "first_load_s": round(first["load"], 3),
                "rerun_s": round(med(r["seconds"] for r in again), 2),
                "rerun_ratio": round(med(r["seconds"] for r in again) / bare_s, 3),
                "rerun_prepare_load_s": round(med(r["prepare"] + r["load"] for r in again), 3),
                "filtered_points": filtered["num_points"],
                "filtered_prepare_load_s": round(filtered["prepare"] + filtered["load"], 3),
                "filtered_share_of_first": round((filtered["prepare"] + filtered["load"])
                                                 / (first["prepare"] + first["load"]), 3),
                "assign_s": round(assign["seconds"], 2), "assign_docs_per_s": round(n / assign["seconds"]),
                "data_mb": round(data_mb), "peak_above_idle_mb": round(max(r["peak_above_idle_mb"]
                                                                          for r in [first, *again])),
                "peak_above_idle_over_data": round(max(r["peak_above_idle_mb"] for r in [first, *again]) / data_mb, 2),
            }
            print(f"{n:>8}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
            if n != 2_000:
                figures["sizes"][str(n)] = row
            del X
    last_line(figures)


if __name__ == "__main__":
    main()
