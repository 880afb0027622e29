"""Faults on the segment path, on the real servers: the preparer SIGKILLed while it writes
an import's segments, and Postgres restarted during an import. Nothing is half-applied,
and no row or manifest ever names a segment whose object is not whole in S3.

(S3 away while a run seals its tail is `test_faults.py`'s S3 test: the run's sealing
upload is retried and the run completes.)"""
from __future__ import annotations

import io
import signal
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from clusterflow.storage import S3ObjectStore
from tests.e2e.conftest import wait_for_task
from tests.e2e.test_faults import all_alive, servers
from tests.support.kafka import query

pytestmark = pytest.mark.e2e
DIM = 16
ROWS = 300_000


@pytest.fixture(scope="module")
def big_file() -> bytes:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    buf = io.BytesIO()
    pq.write_table(pa.table({"document_id": [f"d{i:06d}" for i in range(ROWS)],
                             "v": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), DIM),
                             "n": np.arange(ROWS)}), buf, row_group_size=10_000)
    return buf.getvalue()


def start_import(api, data: bytes) -> tuple[str, dict]:
    r = api.post("/v1/collections", json={"collection_name": f"fault-{uuid.uuid4().hex[:8]}", "embeddings": {"v": DIM}})
    collection_id = r.json()["collection_id"]
    r = api.post(f"/v1/collections/{collection_id}/documents/import", content=data,
                 headers={"Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 200, r.text
    return collection_id, r.json()


def wait_importing(api, task_id: str, timeout: float = 120) -> None:
    """Until the preparer has taken the import, then 2 s more: it is writing segments and
    rows (a 300K-row import takes 15 s or more here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = api.get(f"/v1/tasks/{task_id}").json()
        assert task["status"] not in ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"), \
            f"the import ended before the fault: {task}"
        if task["status"] == "PROCESSING":
            time.sleep(2)
            return
        time.sleep(0.05)
    raise AssertionError("the import never started")


def rows_of(settings, collection_id: str) -> tuple[int, int]:
    docs = query(settings, text("SELECT count(*) AS n FROM documents WHERE collection_id = :c").bindparams(
        c=collection_id))[0]["n"]
    vectors = query(settings, text("SELECT count(*) AS n FROM document_vectors WHERE collection_id = :c").bindparams(
        c=collection_id))[0]["n"]
    return docs, vectors


def assert_segments_whole(settings, collection_id: str) -> None:
    """Every registered segment of the collection is in S3 with the rows it says, and
    every row points at a registered one."""
    store = S3ObjectStore.from_settings(settings)
    segments = query(settings, text("SELECT segment_id, object_key, num_rows FROM segments WHERE collection_id = :c")
                     .bindparams(c=collection_id))
    for s in segments:
        with store.client.get_object(bucket_name=store.bucket, object_name=s["object_key"]) as response:
            data = response.read()
        assert pq.read_metadata(io.BytesIO(data)).num_rows == s["num_rows"], s
    dangling = query(settings, text(
        "SELECT count(*) AS n FROM document_vectors dv WHERE dv.collection_id = :c AND (dv.segment_id IS NULL OR "
        "NOT EXISTS (SELECT 1 FROM segments s WHERE s.segment_id = dv.segment_id))").bindparams(c=collection_id))
    assert dangling[0]["n"] == 0


def test_the_preparer_killed_mid_import_leaves_nothing_partial_and_the_import_completes(api, stack, settings,
                                                                                        big_file):
    collection_id, task = start_import(api, big_file)
    wait_importing(api, task["task_id"])
    stack.kill("services.preparer", signal.SIGKILL)
    assert rows_of(settings, collection_id) == (0, 0)  # the import's transaction died with it
    stack.spawn("services.preparer")
    done = wait_for_task(api, task["task_id"], timeout=300, stack=stack)  # redelivered, imported again
    assert done["status"] == "COMPLETED", done
    assert done["additional_data"]["import"]["imported"] == ROWS
    assert rows_of(settings, collection_id) == (ROWS, ROWS)
    assert_segments_whole(settings, collection_id)
    all_alive(stack)


def test_postgres_restarted_during_an_import_never_half_applies_it(api, stack, settings, big_file):
    collection_id, task = start_import(api, big_file)
    wait_importing(api, task["task_id"])
    try:
        servers("restart", "postgres")
    finally:
        servers("start", "postgres")
    done = wait_for_task(api, task["task_id"], timeout=300, stack=stack)
    docs, vectors = rows_of(settings, collection_id)
    if done["status"] == "COMPLETED":  # retried from the start
        assert (docs, vectors) == (ROWS, ROWS) and done["additional_data"]["import"]["imported"] == ROWS
    else:  # or it fails, saying why, and nothing of it is stored
        assert done["status"] == "FAILED" and done["error"], done
        assert (docs, vectors) == (0, 0)
    assert_segments_whole(settings, collection_id)
    all_alive(stack)
