"""Benchmark: loading documents, the bulk import beside the REST batch upsert, on the
same data in one run.

    eval "$(deploy/local/servers.sh env)"
    .venv/bin/python bench/ingest.py --sizes 100000 1000000 [--upsert-docs 20000]

- import: a parquet file (ids, 384-d float32 vectors, a payload column) uploaded to
  `POST /v1/collections/{id}/documents/import`, from the upload's start to the import
  task's end; documents per second. Its segments are written as it imports, so this is
  the time to "ready for a run" (the stage split is the preparer's log line).
- upsert: `--upsert-docs` of the same documents through `POST .../documents` in
  batches of 500 JSON documents, then until the sealer has sealed them (the tail is
  empty): documents per second, and the sealing wait on its own.
The last line is the figures as one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import asyncpg

from common import (  # noqa: E402  (bench/ is the script directory)
    DIM,
    dsn,
    fresh_settings,
    import_documents,
    last_line,
    make_data,
    running_stack,
    write_import_file,
)

UPSERT_BATCH = 500


def tail_rows(settings, collection_id: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn(settings))
        try:
            return await conn.fetchval("SELECT count(*) FROM document_vectors WHERE collection_id = $1 "
                                       "AND segment_id IS NULL", collection_id)
        finally:
            await conn.close()
    return asyncio.run(count())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--upsert-docs", type=int, default=20_000, help="documents through the REST upsert")
    args = parser.parse_args()
    settings = fresh_settings("clusterflow_bench_ingest")
    figures: dict = {"dim": DIM, "import": {}, "upsert": {}}
    with running_stack(settings) as (_, client), tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for n in [2_000, *args.sizes]:  # 2,000: a warm-up, not reported
            X = make_data(n, seed=n)
            path = os.path.join(tmp, f"docs-{n}.parquet")
            write_import_file(path, X)
            size_mb = os.path.getsize(path) / 2**20
            _, seconds, task = import_documents(client, f"import {n}", path)
            result = task["additional_data"]["import"]
            assert result["imported"] == n, result
            os.unlink(path)
            row = {"seconds": round(seconds, 2), "docs_per_s": round(n / seconds), "file_mb": round(size_mb),
                   "segments": result["segments"], "mb_per_s": round(size_mb / seconds, 1)}
            print(f"import {n:>9,}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
            if n != 2_000:
                figures["import"][str(n)] = row

        n = args.upsert_docs
        X = make_data(n, seed=1)
        collection = client.create_collection("upsert", {"text": DIM})["collection_id"]
        t0 = time.perf_counter()
        for start in range(0, n, UPSERT_BATCH):
            client.upsert_documents(collection, [
                {"document_id": f"doc_{i:07d}", "payload": {"bucket": i % 10}, "embeddings": {"text": X[i].tolist()}}
                for i in range(start, min(start + UPSERT_BATCH, n))])
        upsert_s = time.perf_counter() - t0
        while tail_rows(settings, collection):
            time.sleep(0.2)
        sealed_s = time.perf_counter() - t0 - upsert_s
        figures["upsert"] = {"docs": n, "seconds": round(upsert_s, 2), "docs_per_s": round(n / upsert_s),
                             "sealed_after_s": round(sealed_s, 2)}
        print(f"upsert {n:>9,}: {upsert_s:.2f}s, {n / upsert_s:,.0f} docs/s; sealed {sealed_s:.2f}s later", flush=True)
    last_line(figures)


if __name__ == "__main__":
    main()
