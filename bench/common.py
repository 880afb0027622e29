"""What the benchmarks share: the data (unit vectors around K random directions), a
fresh database with the documents loaded by COPY (setup, never measured), the stack of
services, and a run's stages as its status events recorded them."""
from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import asyncpg
import numpy as np

from clusterflow.client import Client
from clusterflow.db import migrate
from clusterflow.keys import create_key
from clusterflow.settings import Settings, get_settings
from clusterflow.stack import Stack
from services.clusterer.app import WARM_UP_DONE

DIM = 384
K = 20
LOAD_BATCH = 100_000


def make_data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _draw(rng, rng.normal(size=(K, DIM)), n)


def _draw(rng: np.random.Generator, centers: np.ndarray, size: int) -> np.ndarray:
    """`size` unit vectors, each around one of `centers` (float32)."""
    X = centers[rng.integers(0, len(centers), size=size)] + rng.normal(scale=0.5, size=(size, centers.shape[1]))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


def fresh_settings(db: str) -> Settings:
    """The environment's settings on a new, migrated database `db` (and its own topics)."""
    base = get_settings()
    admin = base.database_url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres"

    async def recreate() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{db}"')
        await conn.close()

    asyncio.run(recreate())
    settings = base.model_copy(update={"database_url": base.database_url.rsplit("/", 1)[0] + "/" + db,
                                       "topic_prefix": f"{db}."})
    migrate(settings.database_url)
    return settings


def dsn(settings: Settings) -> str:
    return settings.database_url.replace("+asyncpg", "")


@contextmanager
def running_stack(settings: Settings) -> Iterator[tuple[Stack, Client]]:
    """The five services on `settings`, and a client of namespace "bench" with its key."""
    stack = Stack(settings=settings, log_dir=Path(tempfile.mkdtemp(prefix="bench-logs-")))
    stack.start()
    if settings.clusterer_warm_up:  # measure runs, not numba compiling UMAP beside them
        stack.wait_for_log("services.clusterer", WARM_UP_DONE, timeout=300)
    client = Client(stack.url, namespace="bench", api_key=create_key(settings.database_url, ["bench"], name="bench"))
    try:
        yield stack, client
    finally:
        client.close()
        stack.stop()


def load(settings: Settings, collection_id: str, X: np.ndarray) -> None:
    asyncio.run(_load(dsn(settings), collection_id, X))


async def _load(url: str, collection_id: str, X: np.ndarray) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO collections (collection_id, namespace, collection_name, embeddings) "
            "VALUES ($1, 'bench', $1, $2::jsonb)", collection_id, f'{{"text": {DIM}}}')
        for start in range(0, len(X), LOAD_BATCH):
            ids = [f"doc_{i:07d}" for i in range(start, min(start + LOAD_BATCH, len(X)))]
            await conn.copy_records_to_table("documents", records=[(collection_id, i, "{}") for i in ids],
                                             columns=["collection_id", "document_id", "payload"])
            await conn.copy_records_to_table(
                "document_vectors",
                records=[(collection_id, i, "text", X[start + j].tobytes()) for j, i in enumerate(ids)],
                columns=["collection_id", "document_id", "embedding_name", "vector"])
        await conn.execute("ANALYZE documents; ANALYZE document_vectors")
    finally:
        await conn.close()


def stage_times(settings: Settings, run_id: str) -> tuple[dict[tuple[str, str], datetime], datetime | None]:
    """When each (service, stage) of the run began, by its status events, and when the
    run completed."""
    async def fetch():
        conn = await asyncpg.connect(dsn(settings))
        try:
            rows = await conn.fetch("SELECT service, stage, occurred_at FROM run_events WHERE run_id = $1 "
                                    "ORDER BY occurred_at", run_id)
            completed = await conn.fetchval("SELECT completed_at FROM executions WHERE run_id = $1", run_id)
        finally:
            await conn.close()
        return {(r["service"], r["stage"]): r["occurred_at"] for r in rows}, completed

    return asyncio.run(fetch())


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields[field].split()[0]) / 1024


def make_pieces(n: int, first: int = 0, seed: int = 0, piece: int = 100_000) -> Iterator[tuple[int, np.ndarray]]:
    """Rows [first, first + n) of a collection of any size drawn like `make_data` (the
    same K directions for every row), `piece` rows at a time as (first row, float32
    matrix): a 5M x 384 collection is written without ever being in memory whole."""
    centers = np.random.default_rng(seed).normal(size=(K, DIM))
    for start in range(first, first + n, piece):
        yield start, _draw(np.random.default_rng([seed, start]), centers, min(piece, first + n - start))


def _import_table(X: np.ndarray, first: int, buckets: int):
    import pyarrow as pa

    n, d = X.shape
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), pa.float32()), d)
    rows = np.arange(first, first + n)
    return pa.table({"document_id": [f"doc_{i:07d}" for i in rows], "embedding": vectors, "bucket": rows % buckets})


def write_import_file(path: str, X: np.ndarray | Iterator[tuple[int, np.ndarray]], buckets: int = 10) -> None:
    """The documents as a user's parquet file: ids, the vectors (a fixed-size list of
    float32), and a payload column `bucket` (row number mod `buckets`) to filter on.
    `X`: the matrix, or (first row, rows) pieces (`make_pieces`) written one at a time."""
    import pyarrow.parquet as pq

    pieces = [(0, X)] if isinstance(X, np.ndarray) else X
    writer = None
    try:
        for first, part in pieces:
            table = _import_table(part, first, buckets)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="none")
            writer.write_table(table, row_group_size=50_000)
    finally:
        if writer is not None:
            writer.close()


def import_documents(client: Client, name: str, path: str, collection_id: str | None = None
                     ) -> tuple[str, float, dict]:
    """The file imported through the import endpoint into `collection_id` (None: a new
    collection of `name`): its id, the seconds from the upload's start to the import
    task's end, and the task."""
    if collection_id is None:
        collection_id = client.create_collection(name, {"text": DIM})["collection_id"]
    t0 = time.perf_counter()
    task = client.import_file(collection_id, path)
    done = client.wait(task["task_id"], timeout=3600, interval=0.1, max_interval=0.2)
    seconds = time.perf_counter() - t0
    assert done["status"] == "COMPLETED", done
    return collection_id, seconds, done


def last_line(figures: dict) -> None:
    """Every benchmark ends with its figures as one JSON line."""
    import json

    print(json.dumps(figures, sort_keys=True))
