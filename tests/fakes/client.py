"""Fakes of the REST API for the user's side (clusterflow/client.py, the CLI, the demo):
`FakeApi` answers the CLI's requests through httpx.MockTransport, `RecordingClient`
stands in for the Python client where only what it was sent matters."""
from __future__ import annotations

import json
import re

import httpx

DIM = 3  # the embedding dimension of FakeApi's collection


class FakeApi:
    """Just enough of the gateway: records every request, answers from small tables."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.upserts: list[dict] = []
        self.imports: list[httpx.Request] = []
        self.collections = {"col_1": {"collection_id": "col_1", "namespace": "ns", "collection_name": "docs",
                                      "embeddings": {"text": DIM}, "metadata": {}, "document_count": 0,
                                      "created_at": "2025-01-01T00:00:00Z"}}
        self.task_states = [("PENDING", None, 0.0), ("IN_PROGRESS", "clustering", 0.4),
                            ("IN_PROGRESS", "layout", 0.8), ("COMPLETED", "completed", 1.0)]
        self.task_error: str | None = None
        self.polls = 0
        self.centroids = [
            {"cluster_id": "cl_-1", "num_members": 5, "keywords": []},
            {"cluster_id": "cl_1", "num_members": 8, "label": "Space probes", "keywords": ["orbit", "probe"]},
            {"cluster_id": "cl_0", "num_members": 12, "label": "Medieval history",
             "keywords": ["king", "castle", "siege"]}]
        self.members = [{"document_id": f"d{i}", "cluster_id": f"cl_{i % 3}", "distance_to_centroid": i / 10,
                         "x": float(i), "y": -float(i), "z": None} for i in range(25)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if path.endswith("/documents/import"):
            self.imports.append(request)
            return self.ok({"task_id": "task_imp", "task_type": "api_collections_documents_create",
                            "status": "PENDING", "additional_data": {"import_id": "imp_1", "progress": 0.0}})
        if path == "/v1/tasks/task_imp":
            return self.ok({"task_id": "task_imp", "task_type": "api_collections_documents_create",
                            "status": "COMPLETED_WITH_ERRORS", "additional_data": {"progress": 1.0, "import": {
                                "rows": 23, "imported": 22, "bad_row_count": 1, "segments": 1, "seconds": 0.1,
                                "bad_rows": [{"row": 7, "document_id": "doc-7", "reason": "vector holds NaN"}]}}})
        body = json.loads(request.content) if request.content else None
        if method == "GET" and path == "/v1/collections":
            return self.ok({"results": list(self.collections.values()),
                            "pagination": {"limit": 100, "offset": 0, "total": len(self.collections)}})
        if method == "POST" and path == "/v1/collections":
            if body["collection_name"] == "taken":
                return self.error(409, "A collection named 'taken' already exists")
            row = {**self.collections["col_1"], "collection_id": "col_2", "collection_name": body["collection_name"],
                   "embeddings": body["embeddings"]}
            return self.ok(row)
        if m := re.fullmatch(r"/v1/collections/([^/]+)", path):
            found = [c for c in self.collections.values() if m[1] in (c["collection_id"], c["collection_name"])]
            return self.ok(found[0]) if found else self.error(404, "Collection not found")
        if m := re.fullmatch(r"/v1/collections/([^/]+)/documents", path):
            docs = body["documents"]
            bad = [i for i, d in enumerate(docs) if len(d["embeddings"]["text"]) != DIM]
            if bad:
                return httpx.Response(422, json={"detail": [
                    {"loc": ["body", "documents", i, "embeddings", "text"],
                     "msg": f"dimension mismatch: expected {DIM}", "type": "value_error"} for i in bad]})
            self.upserts.append(body)
            return self.ok({"collection_id": m[1], "upserted": len(docs)})
        if method == "POST" and path == "/v1/clusters":
            return self.ok({"cluster_id": "clust_1", "cluster_name": body["cluster_name"],
                            "clustering_method": body.get("clustering_method", "auto"),
                            "algorithm_params": body["algorithm_params"], "embedding_name": "text",
                            "collection_ids": body["collection_ids"]})
        if method == "POST" and path == "/v1/clusters/clust_1/execute":
            return self.ok({"task_id": "task_1", "task_type": "engine_cluster_build", "status": "PENDING",
                            "additional_data": {"cluster_id": "clust_1", "run_id": "run_1", "progress": 0.0},
                            "queue_position": 1})
        if re.fullmatch(r"/v1/clusters/[^/]+/execute", path):
            return self.error(404, "Cluster not found")
        if path == "/v1/tasks/task_1":
            status, stage, progress = self.task_states[min(self.polls, len(self.task_states) - 1)]
            self.polls += 1
            return self.ok({"task_id": "task_1", "task_type": "engine_cluster_build", "status": status,
                            "additional_data": {"run_id": "run_1", "cluster_id": "clust_1", "stage": stage,
                                                "progress": progress},
                            "outputs": [{"num_clusters": 3}] if status == "COMPLETED" else None,
                            "error": self.task_error if status == "FAILED" else None})
        if path.startswith("/v1/tasks/"):
            return self.error(404, "Task not found")
        if path in ("/v1/clusters/clust_1/executions", "/v1/clusters/clust_1/executions/run_1"):
            return self.ok({"run_id": "run_1", "cluster_id": "clust_1", "task_id": "task_1", "status": "COMPLETED",
                            "clustering_method": "kmeans", "num_clusters": 2, "num_points": 25, "noise_count": 5,
                            "metrics": {"silhouette_score": 0.4567, "davies_bouldin_index": 0.8,
                                        "calinski_harabasz_score": 120.0},
                            "centroids": self.centroids})
        if path == "/v1/clusters/clust_1/executions/run_1/data":
            page = self.members[body["offset"]:body["offset"] + body["limit"]]
            return self.ok({"run_id": "run_1", "cluster_id": "clust_1", "members": page, "centroids": None,
                            "pagination": {"limit": body["limit"], "offset": body["offset"],
                                           "total": len(self.members)}})
        if path.startswith("/v1/clusters/"):
            return self.error(404, "Cluster not found")
        return self.error(404, "Not Found")

    @staticmethod
    def ok(body: dict) -> httpx.Response:
        return httpx.Response(200, json=body)

    @staticmethod
    def error(status: int, message: str) -> httpx.Response:
        return httpx.Response(status, json={"success": False, "status": status,
                                            "error": {"message": message, "type": "Error"}})


class RecordingClient:
    def __init__(self) -> None:
        self.documents: list[dict] = []

    def create_collection(self, name: str, embeddings: dict, **extra) -> dict:
        return {"collection_id": "col_1"}

    def upsert_documents(self, collection_id: str, documents: list[dict]) -> dict:
        self.documents += documents
        return {"upserted": len(documents)}
