"""Benchmark: assign-mode runs end to end (execute -> COMPLETED), documents per second,
with where the time goes and the workers' peak memory.

    eval "$(deploy/local/servers.sh env)"
    .venv/bin/python bench/assign_mode.py --sizes 100000 1000000

Documents (384 dims) are loaded straight into Postgres with COPY (setup, not measured):
they are the unsealed tail, which the fit run seals into segments.
A full kmeans run (k=20) on a 20,000-document sample gives the centroids (setup); the
measured path is an assign run over every document: REST execute, Kafka, the preparer's
selection and manifest, the clusterer's block-by-block assignment from its segment
cache and members file in S3, the status projector, task polling (every 0.1 s).
"stages" splits the run by its status events: export (preparer: the selection and its
manifest), download (clusterer: the manifest, the segments not cached), assign (read, assign, write
members), store (upload the members, centroids, events, projection). "dataset ->
result" is download + assign + store: from the prepared dataset in S3 to the stored
result, the clusterer's part. "bare" is `assign_to_centroids` on the same array in this
process. Memory is the preparer's and the clusterer's VmHWM (peak) and their VmRSS when
idle (fresh processes per size), beside the dataset's float32 size: streamed, neither
holds the dataset.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from services.clusterer.engine import assign_to_centroids

from common import (  # noqa: E402  (bench/ is the script directory)
    DIM,
    K,
    fresh_settings,
    last_line,
    load,
    make_data,
    rss_mb,
    running_stack,
    stage_times,
)

FIT_SAMPLE = 20_000
WORKERS = ("services.preparer", "services.clusterer")


def stages(settings, run_id: str) -> dict[str, float]:
    at, completed = stage_times(settings, run_id)

    def span(a, b) -> float:
        return (b - a).total_seconds() if a and b else float("nan")

    return {
        "export": span(at.get(("preparer", "preparing")), at.get(("preparer", "prepared"))),
        "download": span(at.get(("clusterer", "loading")), at.get(("clusterer", "assigning"))),
        "assign": span(at.get(("clusterer", "assigning")), at.get(("clusterer", "writing"))),
        "store": span(at.get(("clusterer", "writing")), completed),
    }


def bare(X: np.ndarray, centroids: np.ndarray) -> float:
    t0 = time.perf_counter()
    assign_to_centroids(X, centroids, 0.5)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    args = parser.parse_args()

    settings = fresh_settings("clusterflow_bench_assign")
    rows = []
    with running_stack(settings) as (stack, client):
        # Warm-up size: imports and consumer-group joins are paid once, not per size.
        for n in [5_000, *args.sizes]:
            X = make_data(n)
            collection_id = f"col_bench_{n}"
            t0 = time.perf_counter()
            load(settings, collection_id, X)
            print(f"loaded {n:,} documents in {time.perf_counter() - t0:.1f}s", flush=True)
            cluster = client.create_cluster(collection_ids=[collection_id], cluster_name=f"bench {n}",
                                            clustering_method="kmeans", algorithm_params={"n_clusters": K},
                                            sample_size=min(n, FIT_SAMPLE), defer_visualization=True)
            fit = client.wait(client.execute(cluster["cluster_id"])["task_id"], timeout=3600)
            assert fit["status"] == "COMPLETED", fit
            centroids = np.asarray([c["centroid_vector"] for c in client.execution_data(
                cluster["cluster_id"], fit["additional_data"]["run_id"], include_centroid_vectors=True)["centroids"]],
                dtype=np.float32)
            for name in WORKERS:
                stack.kill(name)
                stack.spawn(name)
            time.sleep(8)  # let the fresh workers join their groups
            idle = [rss_mb(stack.processes[name].pid, "VmRSS") for name in WORKERS]

            t0 = time.perf_counter()
            task = client.execute(cluster["cluster_id"], mode="assign")
            done = client.wait(task["task_id"], timeout=3600, interval=0.1, max_interval=0.1)
            service_s = time.perf_counter() - t0
            assert done["status"] == "COMPLETED", done
            run_id = task["additional_data"]["run_id"]
            result = client.execution(cluster["cluster_id"], run_id)
            assert result["num_points"] == n, result
            peaks = [rss_mb(stack.processes[name].pid) for name in WORKERS]
            split = stages(settings, run_id)
            bare_s = bare(X, centroids)
            print(f"{n:,}: {service_s:.2f}s, {n / service_s:,.0f} docs/s, stages {split}", flush=True)
            if n == 5_000:
                continue
            rows.append((n, service_s, split, bare_s, peaks, idle, X.nbytes / 2**20))

    print(f"\nassign mode, dim={DIM}, k={K}; seconds and documents per second")
    print(f"{'docs':>9} {'e2e s':>7} {'e2e docs/s':>10} {'export':>7} {'download':>8} {'assign':>7} {'store':>6} "
          f"{'dataset->result s':>17} {'docs/s':>9} {'bare s':>7} {'prep MB peak/idle':>17} "
          f"{'clus MB peak/idle':>17} {'data MB':>8}")
    for n, s, split, b, (prep, clus), (prep0, clus0), data in rows:
        tail = split["download"] + split["assign"] + split["store"]
        print(f"{n:>9} {s:>7.2f} {n / s:>10,.0f} {split['export']:>7.2f} {split['download']:>8.2f} "
              f"{split['assign']:>7.2f} {split['store']:>6.2f} {tail:>17.2f} {n / tail:>9,.0f} {b:>7.2f} "
              f"{f'{prep:.0f}/{prep0:.0f}':>17} {f'{clus:.0f}/{clus0:.0f}':>17} {data:>8.0f}")
    last_line({"dim": DIM, "k": K, "sizes": {str(n): {
        "seconds": round(s, 2), "docs_per_s": round(n / s), "bare_s": round(b, 3),
        **{f"{k}_s": round(v, 3) for k, v in split.items()},
        "preparer_peak_mb": round(prep), "clusterer_peak_mb": round(clus), "data_mb": round(data)}
        for n, s, split, b, (prep, clus), _, data in rows}})


if __name__ == "__main__":
    main()
