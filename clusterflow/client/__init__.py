"""A small Python client for the clusterflow REST API (used by the demo and the CLI)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from contracts.api import COMPLETED_STATUSES, TERMINAL_STATUSES

TERMINAL = TERMINAL_STATUSES
COMPLETED = COMPLETED_STATUSES


class ApiError(Exception):
    """An error answer from the API, as one readable line."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {_describe(body)}")


def _describe(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("message", str(body))
    if isinstance(body, dict) and isinstance(body.get("detail"), list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in body["detail"])
    return str(body)


class Client:
    def __init__(self, base_url: str, *, api_key: str | None = None, namespace: str | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = {}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if namespace:
            headers["X-Namespace"] = namespace
        # `transport`: tests pass an httpx.MockTransport; None is the real network.
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    # collections and documents
    def create_collection(self, name: str, embeddings: dict[str, int], **extra: Any) -> dict:
        return self._call("POST", "/v1/collections", json={"collection_name": name, "embeddings": embeddings, **extra})

    def list_collections(self, limit: int = 50, offset: int = 0) -> dict:
        return self._call("GET", "/v1/collections", params={"limit": limit, "offset": offset})

    def get_collection(self, collection_id: str) -> dict:
        return self._call("GET", f"/v1/collections/{collection_id}")

    def delete_collection(self, collection_id: str) -> dict:
        return self._call("DELETE", f"/v1/collections/{collection_id}")

    def upsert_documents(self, collection_id: str, documents: list[dict]) -> dict:
        return self._call("POST", f"/v1/collections/{collection_id}/documents", json={"documents": documents})

    def import_file(self, collection_id: str, path: str, *, id_column: str = "document_id",
                    embedding_columns: dict[str, str] | None = None,
                    payload_columns: list[str] | None = None) -> dict:
        """Upload a parquet file to the collection's bulk import (streamed from disk);
        returns the import's task."""
        params: list[tuple[str, str]] = [("id_column", id_column)]
        params += [("embedding_column", f"{k}={v}") for k, v in (embedding_columns or {}).items()]
        params += [("payload_column", c) for c in payload_columns or []]
        with open(path, "rb") as f:
            return self._call("POST", f"/v1/collections/{collection_id}/documents/import", params=params, content=f,
                              headers={"Content-Type": "application/vnd.apache.parquet"})

    def import_key(self, collection_id: str, s3_key: str, **columns: Any) -> dict:
        """Import a parquet file already in the bucket (ImportDocumentsRequest fields)."""
        return self._call("POST", f"/v1/collections/{collection_id}/documents/import",
                          json={"s3_key": s3_key, **columns})

    # clusters and runs
    def create_cluster(self, **body: Any) -> dict:
        return self._call("POST", "/v1/clusters", json=body)

    def list_clusters(self, limit: int = 50, offset: int = 0, **body: Any) -> dict:
        return self._call("POST", "/v1/clusters/list", params={"limit": limit, "offset": offset}, json=body or None)

    def get_document(self, collection_id: str, document_id: str) -> dict:
        return self._call("GET", f"/v1/collections/{collection_id}/documents/{document_id}")

    def get_cluster(self, cluster_id: str) -> dict:
        return self._call("GET", f"/v1/clusters/{cluster_id}")

    def execute(self, cluster_id: str, **overrides: Any) -> dict:
        return self._call("POST", f"/v1/clusters/{cluster_id}/execute", json=overrides or None)

    def task(self, task_id: str) -> dict:
        return self._call("GET", f"/v1/tasks/{task_id}")

    def execution(self, cluster_id: str, run_id: str | None = None) -> dict | None:
        """A run (status in the hosted SDK's lowercase, `task_status` the task's); the
        latest when run_id is None, and None for a cluster never executed."""
        suffix = f"/{run_id}" if run_id else ""
        return self._call("GET", f"/v1/clusters/{cluster_id}/executions{suffix}")

    def execution_data(self, cluster_id: str, run_id: str, **body: Any) -> dict:
        """One page of `POST .../executions/{run_id}/data` (body: ExecutionDataRequest fields)."""
        return self._call("POST", f"/v1/clusters/{cluster_id}/executions/{run_id}/data", json=body)

    def points(self, cluster_id: str, run_id: str) -> dict:
        """A run's layout as columns (the web view's endpoint)."""
        return self._call("GET", f"/v1/clusters/{cluster_id}/executions/{run_id}/points")

    def wait(self, task_id: str, *, timeout: float = 1800, on_update: Callable[[dict], None] | None = None,
             interval: float = 0.25, max_interval: float = 2.0) -> dict:
        """Poll until the task ends, backing off from `interval` (0.25 s) to `max_interval` (2 s)."""
        deadline, delay = time.monotonic() + timeout, interval
        while True:
            task = self.task(task_id)
            if on_update:
                on_update(task)
            if task["status"] in TERMINAL:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task['status']} after {timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 1.5, max_interval)

    def members(self, cluster_id: str, run_id: str, page_size: int = 5000) -> Iterator[dict]:
        for page in self.member_pages(cluster_id, run_id, page_size):
            yield from page

    def member_pages(self, cluster_id: str, run_id: str, page_size: int = 5000,
                     on_total: Callable[[int], None] | None = None) -> Iterator[list[dict]]:
        """The run's members page by page; `on_total` hears the total after the first page."""
        offset = 0
        while True:
            page = self.execution_data(cluster_id, run_id, include_centroids=False, include_members=True,
                                       offset=offset, limit=page_size)
            total = page["pagination"]["total"]
            if offset == 0 and on_total:
                on_total(total)
            yield page["members"] or []
            offset += page_size
            if offset >= total or not page["members"]:
                return
