"""Benchmark: full-mode runs end to end (execute -> COMPLETED) beside the bare engine
call on the same data in this process, and the clusterer's peak memory.

    eval "$(deploy/local/servers.sh env)"
    .venv/bin/python bench/full_mode.py --sizes 10000 100000 [--method kmeans] [--layout]

Documents are loaded straight into Postgres with COPY (setup, not measured); the
measured path is the service's: REST execute, Kafka, preparer export to S3, clusterer,
status projector, task polling. "bare" is the same scikit-learn work (the engine's
clustering, metrics, centroids and distances; plus the UMAP layout with --layout) on
the same array, timed here in one process. Peak memory is the clusterer process's
VmHWM (reset before each run) beside the dataset's float32 size, as is and above the
process's idle RSS (Python, numpy, scikit-learn, polars and the Kafka client: ~200 MB).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np

from clusterflow.client import Client
from clusterflow.db import migrate
from clusterflow.keys import create_key
from clusterflow.settings import get_settings
from clusterflow.stack import Stack
from services.clusterer import pipeline

from common import DIM, K, make_data  # noqa: E402  (bench/ is the script directory)


async def load(dsn: str, collection_id: str, X: np.ndarray) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO collections (collection_id, namespace, collection_name, embeddings) "
            "VALUES ($1, 'bench', $1, $2::jsonb)", collection_id, f'{{"text": {DIM}}}')
        ids = [f"doc_{i:07d}" for i in range(len(X))]
        await conn.copy_records_to_table("documents", records=[(collection_id, i, "{}") for i in ids],
                                         columns=["collection_id", "document_id", "payload"])
        await conn.copy_records_to_table(
            "document_vectors", records=[(collection_id, i, "text", X[j].tobytes()) for j, i in enumerate(ids)],
            columns=["collection_id", "document_id", "embedding_name", "vector"])
    finally:
        await conn.close()


def peak_rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def bare(X: np.ndarray, method: str, params: dict, layout: bool) -> float:
    t0 = time.perf_counter()
    outcome = pipeline.cluster(X, method, params, 42)
    pipeline.summarize(X, outcome.labels, 42)
    if layout:
        pipeline.layout(X, 2, 42)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--method", default="kmeans")
    parser.add_argument("--layout", action="store_true", help="include the UMAP layout (else deferred)")
    args = parser.parse_args()
    params = {"n_clusters": K} if args.method == "kmeans" else {"min_cluster_size": 50}

    base = get_settings()
    dsn_admin = base.database_url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres"
    db = "clusterflow_bench"

    async def recreate() -> None:
        conn = await asyncpg.connect(dsn_admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{db}"')
        await conn.close()

    asyncio.run(recreate())
    settings = base.model_copy(update={"database_url": base.database_url.rsplit("/", 1)[0] + "/" + db})
    migrate(settings.database_url)
    dsn = settings.database_url.replace("+asyncpg", "")

    stack = Stack(settings=settings, log_dir=Path(tempfile.mkdtemp(prefix="bench-logs-")))
    stack.start()
    client = Client(stack.url, namespace="bench", api_key=create_key(settings.database_url, ["bench"], name="bench"))
    rows = []
    try:
        # A warm-up run pays imports and consumer-group joins once; before each measured
        # run the clusterer's peak-RSS counter is reset (clear_refs 5), so one process
        # serves every size and its peak is that run's.
        clusterer = stack.processes["services.clusterer"].pid
        for n in [2_000, *args.sizes]:
            X = make_data(n)
            collection_id = f"col_bench_{n}"
            asyncio.run(load(dsn, collection_id, X))
            cluster = client.create_cluster(collection_ids=[collection_id], cluster_name=f"bench {n}",
                                            clustering_method=args.method, algorithm_params=params,
                                            defer_visualization=not args.layout)
            Path(f"/proc/{clusterer}/clear_refs").write_text("5")
            idle_mb = peak_rss_mb(clusterer)[1]
            t0 = time.perf_counter()
            task = client.execute(cluster["cluster_id"])
            done = client.wait(task["task_id"], timeout=3600, interval=0.05, max_interval=0.05)
            service_s = time.perf_counter() - t0
            assert done["status"] == "COMPLETED", done
            peak_mb, _ = peak_rss_mb(clusterer)
            bare_s = bare(X, args.method, params, args.layout)
            if n == 2_000:
                continue
            data_mb = X.nbytes / 2**20
            rows.append((n, service_s, bare_s, service_s / bare_s, peak_mb, idle_mb, data_mb))
    finally:
        client.close()
        stack.stop()

    print(f"\nmethod={args.method} dim={DIM} layout={'inline' if args.layout else 'deferred'}")
    print(f"{'docs':>8} {'service s':>10} {'bare s':>8} {'ratio':>6} {'peak MB':>8} {'idle MB':>8} "
          f"{'data MB':>8} {'peak/data':>9} {'(peak-idle)/data':>16}")
    for n, s, b, r, peak, idle, data in rows:
        print(f"{n:>8} {s:>10.2f} {b:>8.2f} {r:>6.2f} {peak:>8.0f} {idle:>8.0f} {data:>8.0f} "
              f"{peak / data:>9.2f} {(peak - idle) / data:>16.2f}")


if __name__ == "__main__":
    main()
