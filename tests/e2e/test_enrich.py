"""POST /v1/clusters/enrich: runs' cluster assignments written onto documents, for real."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tests.e2e.test_assign_composite import _upload, completed_run, labelled_execution, members_of
from tests.e2e.test_full_mode import DIM, create_cluster

pytestmark = pytest.mark.e2e

N = 900
KEYS = {"cluster_id", "cluster_label", "distance_to_centroid", "cluster_stable_id", "cluster_run_id"}


def documents(api, collection_id: str) -> dict[str, dict]:
    out, offset = {}, 0
    while True:
        r = api.get(f"/v1/collections/{collection_id}/documents", params={"limit": 500, "offset": offset})
        assert r.status_code == 200, r.text
        page = r.json()
        out.update({d["document_id"]: d["payload"] for d in page["results"]})
        offset += 500
        if offset >= page["pagination"]["total"]:
            return out


@pytest.fixture(scope="module")
def run(api, stack):
    rng = np.random.default_rng(31)
    centers = rng.normal(size=(3, DIM))
    truth = np.arange(N) % 3
    X = centers[truth] + rng.normal(scale=0.3, size=(N, DIM))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    payloads = [{"id": f"doc_{i:04d}", "title": f"document {i}", "meta": {"n": i}} for i in range(N)]
    collection_id = _upload(api, "e2e-enrich", X, payloads)
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": 3})
    run_id = completed_run(api, stack, cluster_id)
    result = labelled_execution(api, cluster_id, run_id)
    data = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/data",
                    json={"include_centroids": False, "include_members": True, "limit": N}).json()
    distances = {m["document_id"]: m["distance_to_centroid"] for m in data["members"]}
    return collection_id, cluster_id, run_id, result, members_of(api, cluster_id, run_id), distances


def check_enriched(payloads: dict[str, dict], run_id: str, result: dict, members: dict[str, str],
                   distances: dict[str, float]) -> None:
    centroids = {c["cluster_id"]: c for c in result["centroids"]}
    assert len(payloads) == N
    for doc_id, payload in payloads.items():
        assert KEYS <= payload.keys()
        cluster = members[doc_id]
        assert payload["cluster_id"] == cluster and payload["cluster_run_id"] == run_id
        assert payload["cluster_label"] == centroids[cluster]["label"] is not None
        assert payload["cluster_stable_id"] == centroids[cluster]["stable_id"] is not None
        assert payload["distance_to_centroid"] == pytest.approx(distances[doc_id], rel=1e-6)
        n = int(doc_id.split("_")[1])
        assert payload["title"] == f"document {n}" and payload["meta"] == {"n": n}  # untouched


def test_enrich_into_a_target_collection_leaves_the_source_alone(api, run):
    collection_id, _, run_id, result, members, distances = run
    r = api.post("/v1/collections", json={"collection_name": "e2e-enrich-target", "embeddings": {"text": DIM}})
    target = r.json()["collection_id"]
    before = documents(api, collection_id)
    r = api.post("/v1/clusters/enrich", json={"clustering_ids": [run_id], "source_collection_id": collection_id,
                                             "target_collection_id": target, "batch_size": 400})
    assert r.status_code == 200, r.text
    assert r.json() == {"processed": N, "enriched": N, "failed": 0, "batches": math.ceil(N / 400), "errors": []}
    check_enriched(documents(api, target), run_id, result, members, distances)
    assert documents(api, collection_id) == before
    assert api.get(f"/v1/collections/{target}").json()["document_count"] == N


def test_enrich_in_place_is_idempotent(api, run):
    collection_id, _, run_id, result, members, distances = run
    body = {"clustering_ids": [run_id], "source_collection_id": collection_id, "batch_size": 250, "parallelism": 3}
    r = api.post("/v1/clusters/enrich", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"processed": N, "enriched": N, "failed": 0, "batches": 4, "errors": []}
    first = documents(api, collection_id)
    check_enriched(first, run_id, result, members, distances)

    r = api.post("/v1/clusters/enrich", json={**body, "parallelism": 1, "batch_size": 1000})
    assert r.json() == {"processed": N, "enriched": N, "failed": 0, "batches": 1, "errors": []}
    assert documents(api, collection_id) == first


def test_documents_gone_since_the_run_count_as_failed(api, run):
    collection_id, _, run_id, _, _, _ = run
    assert api.delete(f"/v1/collections/{collection_id}/documents/doc_0007").status_code in (200, 204)
    r = api.post("/v1/clusters/enrich", json={"clustering_ids": [run_id], "source_collection_id": collection_id})
    assert r.status_code == 200, r.text
    assert r.json() == {"processed": N, "enriched": N - 1, "failed": 1, "batches": 1, "errors": []}


def test_bad_requests(api, run):
    collection_id, cluster_id, run_id, _, _, _ = run
    r = api.post("/v1/clusters/enrich", json={"clustering_ids": ["run_nope"], "source_collection_id": collection_id})
    assert r.status_code == 404 and r.json()["error"]["details"] == {"resource": "execution", "id": "run_nope"}
    r = api.post("/v1/clusters/enrich", json={"clustering_ids": [run_id], "source_collection_id": "col_nope"})
    assert r.status_code == 404 and r.json()["error"]["details"]["resource"] == "collection"
    r = api.post("/v1/clusters/enrich", json={"clustering_ids": [], "source_collection_id": collection_id})
    assert r.status_code == 422
    r = api.post("/v1/collections", json={"collection_name": "e2e-enrich-8d", "embeddings": {"text": 8}})
    r = api.post("/v1/clusters/enrich", json={"clustering_ids": [run_id], "source_collection_id": collection_id,
                                             "target_collection_id": r.json()["collection_id"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "incompatible_collections"
    failing = create_cluster(api, collection_id, "kmeans", {"n_clusters": 5000})
    task = api.post(f"/v1/clusters/{failing}/execute").json()
    r = api.post("/v1/clusters/enrich", json={"clustering_ids": [task["additional_data"]["run_id"]],
                                             "source_collection_id": collection_id})
    assert r.status_code == 400 and r.json()["error"]["code"] == "results_not_ready"
