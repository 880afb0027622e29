"""Bulk import and the segment path through the whole system (REST, Kafka, the five
services, Postgres, S3): what a user sees, and what the services count."""
from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clusterflow.storage import S3ObjectStore
from tests.e2e.conftest import wait_for_task
from tests.support.corpus import make_cluster, start_run

DIM = 8


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def groups(n_per: int = 60, seed: int = 5) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6, size=(3, DIM))
    truth = np.repeat(np.arange(3), n_per)
    X = (centers[truth] + rng.normal(scale=0.3, size=(len(truth), DIM))).astype(np.float32)
    return [f"doc_{i:04d}" for i in range(len(X))], X, truth


def new_collection(api: httpx.Client) -> str:
    r = api.post("/v1/collections", json={"collection_name": f"imp-{uuid.uuid4().hex[:8]}", "embeddings": {"v": DIM}})
    assert r.status_code == 200, r.text
    return r.json()["collection_id"]


def upload(api: httpx.Client, collection_id: str, data: bytes, **params) -> httpx.Response:
    return api.post(f"/v1/collections/{collection_id}/documents/import", content=data, params=params,
                    headers={"Content-Type": "application/vnd.apache.parquet"})


def metric(stack, service: str, name: str) -> float:
    body = httpx.get(stack.metrics_urls[service], timeout=10).text
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_upload_is_imported_as_a_task_and_bad_rows_are_reported_by_number(api, stack):
    collection_id = new_collection(api)
    ids, X, truth = groups()
    vectors = [list(map(float, v)) for v in X]
    vectors[5] = vectors[5][:4]                      # wrong dimension
    vectors[9] = [float("nan")] * DIM                # not finite
    ids[20] = ids[21]                                # duplicate id (both refused)
    table = pa.table({"document_id": ids, "v": vectors, "group": truth.tolist(),
                      "title": [f"point {i}" for i in range(len(ids))]})
    r = upload(api, collection_id, parquet_bytes(table))
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["task_type"] == "api_collections_documents_create" and task["status"] == "PENDING"
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED_WITH_ERRORS", done
    result = done["additional_data"]["import"]
    assert result["rows"] == 180 and result["imported"] == 176 and result["bad_row_count"] == 4
    assert {b["row"]: b["reason"] for b in result["bad_rows"]} == {
        5: "embedding 'v': dimension 4, the collection declares 8",
        9: "embedding 'v': vector holds NaN or infinity",
        20: "duplicate document id in the file", 21: "duplicate document id in the file"}
    doc = api.get(f"/v1/collections/{collection_id}/documents/doc_0003").json()
    assert doc["payload"] == {"group": int(truth[3]), "title": "point 3"}
    assert api.get(f"/v1/collections/{collection_id}/documents/doc_0005").status_code == 404
    assert api.get(f"/v1/collections/{collection_id}").json()["document_count"] == 176

    # The imported vectors are already sealed: a run reads them, sealing nothing.
    cluster_id = make_cluster(api, collection_id, "kmeans", {"n_clusters": 3})
    run = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert run["status"] == "COMPLETED", run
    data = api.post(f"/v1/clusters/{cluster_id}/executions/{run['additional_data']['run_id']}/data",
                    json={"include_members": True, "limit": 1000}).json()
    members = {m["document_id"]: m["cluster_id"] for m in data["members"]}
    assert len(members) == 176 and "doc_0005" not in members
    by_group: dict[int, set[str]] = {}
    for i, doc_id in enumerate(ids):
        if doc_id in members:
            by_group.setdefault(int(truth[i]), set()).add(members[doc_id])
    assert all(len(c) == 1 for c in by_group.values()) and len({next(iter(c)) for c in by_group.values()}) == 3


def test_a_rerun_of_an_unchanged_collection_downloads_no_vector_bytes_and_seals_nothing(api, stack):
    collection_id = new_collection(api)
    ids, X, _ = groups(n_per=100, seed=9)
    r = upload(api, collection_id, parquet_bytes(pa.table({"document_id": ids, "v": [list(map(float, v)) for v in X]})))
    assert wait_for_task(api, r.json()["task_id"], stack=stack)["status"] == "COMPLETED"
    cluster_id = make_cluster(api, collection_id, "kmeans", {"n_clusters": 3}, defer_visualization=True)
    first = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert first["status"] == "COMPLETED", first
    downloaded = metric(stack, "clusterer", "clusterflow_segment_cache_downloaded_bytes_total")
    misses = metric(stack, "clusterer", 'clusterflow_segment_cache_total{outcome="miss"}')
    hits = metric(stack, "clusterer", 'clusterflow_segment_cache_total{outcome="hit"}')
    sealed = metric(stack, "preparer", "clusterflow_segment_sealed_rows_total")
    assert downloaded >= 300 * DIM * 4 and misses >= 1  # the first run fetched the imported segment
    second = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert second["status"] == "COMPLETED", second
    assert metric(stack, "clusterer", "clusterflow_segment_cache_downloaded_bytes_total") == downloaded
    assert metric(stack, "clusterer", 'clusterflow_segment_cache_total{outcome="miss"}') == misses
    assert metric(stack, "clusterer", 'clusterflow_segment_cache_total{outcome="hit"}') > hits
    assert metric(stack, "preparer", "clusterflow_segment_sealed_rows_total") == sealed


def test_a_file_in_the_bucket_is_imported_by_its_key(api, stack, settings):
    collection_id = new_collection(api)
    ids, X, _ = groups(n_per=10, seed=2)
    store = S3ObjectStore.from_settings(settings)
    key = f"e2e/uploads/{uuid.uuid4().hex}.parquet"
    data = parquet_bytes(pa.table({"id": ids, "vec": pa.array([v.tolist() for v in X], pa.list_(pa.float32(), DIM)),
                                   "lang": ["en"] * len(ids)}))
    store.client.put_object(bucket_name=store.bucket, object_name=key, data=io.BytesIO(data), length=len(data))
    r = api.post(f"/v1/collections/{collection_id}/documents/import",
                 json={"s3_key": key, "id_column": "id", "embedding_columns": {"v": "vec"}})
    assert r.status_code == 200, r.text
    done = wait_for_task(api, r.json()["task_id"], stack=stack)
    assert done["status"] == "COMPLETED" and done["additional_data"]["import"]["imported"] == 30, done
    assert api.get(f"/v1/collections/{collection_id}/documents/doc_0004").json()["payload"] == {"lang": "en"}
    assert store.exists(key)  # the client's own file stays


def test_what_is_not_an_importable_parquet_file_gets_a_clear_400(api, stack, settings):
    collection_id = new_collection(api)
    r = upload(api, collection_id, b"document_id,v\na,1\n")
    assert r.status_code == 400 and "not a parquet file" in r.json()["error"]["message"], r.text
    r = upload(api, collection_id, parquet_bytes(pa.table({"name": ["a"], "v": [[1.0] * DIM]})))
    assert r.status_code == 400 and "no id column 'document_id'" in r.json()["error"]["message"], r.text
    r = api.post(f"/v1/collections/{collection_id}/documents/import", json={"s3_key": "other-tenant/x.parquet"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "key_outside_namespace", r.text
    r = api.post(f"/v1/collections/{collection_id}/documents/import", json={"s3_key": "e2e/nothing-here.parquet"})
    assert r.status_code == 404, r.text
    r = api.post(f"/v1/collections/{collection_id}/documents/import", json={"s3_key": "e2e/x", "unknown": 1})
    assert r.status_code == 422, r.text
    r = api.post("/v1/collections/col_missing/documents/import", content=b"PAR1",
                 headers={"Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 404
    # Nothing was stored by any of them.
    assert api.get(f"/v1/collections/{collection_id}").json()["document_count"] == 0


def test_a_segment_gone_under_a_run_fails_it_by_name_and_the_next_run_seals_again(api, stack, settings):
    collection_id = new_collection(api)
    ids, X, _ = groups(n_per=30, seed=4)
    docs = [{"document_id": i, "payload": {}, "embeddings": {"v": v.tolist()}} for i, v in zip(ids, X)]
    assert api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs}).status_code == 200
    cluster_id = make_cluster(api, collection_id, "kmeans", {"n_clusters": 3}, defer_visualization=True)
    first = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert first["status"] == "COMPLETED", first
    store = S3ObjectStore.from_settings(settings)
    (key,) = [o.object_name for o in store.client.list_objects(
        bucket_name=store.bucket, prefix=f"e2e/segments/{collection_id}/", recursive=True)]
    # Corrupt in S3, and out of the clusterer's cache: the next read must fetch it.
    store.client.put_object(bucket_name=store.bucket, object_name=key, data=io.BytesIO(b"garbage"), length=7)
    for cached in (Path(settings.segment_cache_dir) / "clusterer").glob("*"):
        cached.unlink()
    failed = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert failed["status"] == "FAILED" and key in failed["error"] and "corrupt" in failed["error"], failed
    again = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert again["status"] == "COMPLETED", again
    assert again["outputs"][0]["num_points"] == 90
    keys = {o.object_name for o in store.client.list_objects(
        bucket_name=store.bucket, prefix=f"e2e/segments/{collection_id}/", recursive=True)}
    assert len(keys - {key}) == 1  # sealed again, into a new segment
