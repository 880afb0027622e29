"""Small corpora and runs for the e2e tests of reliability, tenancy and load."""
from __future__ import annotations

import uuid

import httpx
import numpy as np


def separated_groups(groups: int, per_group: int, dim: int, seed: int,
                     scale: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `groups` random directions, as sentence embeddings look."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(groups, dim))
    truth = np.repeat(np.arange(groups), per_group)
    X = centers[truth] + rng.normal(scale=scale, size=(len(truth), dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), truth


def grouped_vectors(groups: int, per_group: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The vectors `make_collection` uploads (document `doc_{i:05d}` is row i) and their groups."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6, size=(groups, dim))
    truth = np.repeat(np.arange(groups), per_group)
    return (centers[truth] + rng.normal(scale=0.4, size=(len(truth), dim))).astype(np.float32), truth


def make_collection(api: httpx.Client, *, groups: int = 4, per_group: int = 50, dim: int = 8, seed: int = 3,
                    name: str | None = None, headers: dict | None = None) -> str:
    """`groups` tight groups of `per_group` points; payloads carry the group and a title."""
    X, truth = grouped_vectors(groups, per_group, dim, seed)
    name = name or f"rel-{uuid.uuid4().hex[:8]}"
    r = api.post("/v1/collections", json={"collection_name": name, "embeddings": {"v": dim}}, headers=headers)
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    docs = [{"document_id": f"doc_{i:05d}",
             "payload": {"group": int(truth[i]), "title": f"point {i} of group {truth[i]}"},
             "embeddings": {"v": X[i].tolist()}} for i in range(len(X))]
    for start in range(0, len(docs), 1000):
        r = api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs[start:start + 1000]},
                     headers=headers)
        assert r.status_code == 200, r.text
    return collection_id


def make_cluster(api: httpx.Client, collection_id: str, method: str = "kmeans", params: dict | None = None, *,
                 headers: dict | None = None, **extra) -> str:
    body = {"collection_ids": [collection_id], "cluster_name": extra.pop("cluster_name", f"{method} run"),
            "clustering_method": method, "algorithm_params": params if params is not None else {"n_clusters": 4},
            **extra}
    r = api.post("/v1/clusters", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["cluster_id"]


def start_run(api: httpx.Client, cluster_id: str, body: dict | None = None, headers: dict | None = None) -> dict:
    r = api.post(f"/v1/clusters/{cluster_id}/execute", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()
