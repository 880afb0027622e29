"""In-memory fakes of the ports, in one place, for unit tests of the rules (never for
integration or e2e tests, which use the real servers):

- `MemoryObjectStore`: the `ObjectStore` port (clusterflow/storage.py) over a dict;
  `OffLoopObjectStore` also fails a test that calls it on the event loop's thread;
- `FakeRunState`: the `RunState` port (clusterflow/runstate.py): statuses by run id,
  optionally a cancel that lands after so many boundary checks;
- `RecordingPublisher`: the `Publisher` port, recording what was published (and
  refusing, like the bus, when told to be away);
- `MemoryProcessed`: the `ProcessedLog` port; `MemorySegmentLedger`: the `SegmentLedger`;
- `FakeJobs`: the Ray Jobs API of the clusterer's Ray engine;
- `FakeGatewayRepository`: the gateway's repository (services/gateway/repository.py),
  as far as the run routes need it, over dicts of rows shaped like the read models;
- `MemoryResults`, `MemoryDocuments`, `MemoryCache`: the labeler's read ports and its
  label cache (tests/support/labeler_fakes.py wires a labeler over them).

The user's side (the REST API as the CLI and the demo see it): tests/fakes/client.py.
"""
from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from clusterflow.readmodel import run_from_request, task_row
from contracts.api import COMPLETED_STATUSES, TaskStatusEnum
from contracts.topics import Topic


class MemoryObjectStore:
    """The `ObjectStore` port over a dict of bytes; counts what it serves."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.downloads = 0
        self.downloaded_bytes = 0

    def put_parquet(self, key: str, frame: pl.DataFrame) -> int:
        buf = io.BytesIO()
        frame.write_parquet(buf)
        self.objects[key] = buf.getvalue()
        return len(self.objects[key])

    def get_parquet(self, key: str, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self._get(key)), columns=columns)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def delete_prefix(self, prefix: str) -> int:
        gone = [k for k in self.objects if k.startswith(prefix)]
        for k in gone:
            del self.objects[k]
        return len(gone)

    def download(self, key: str, path: str) -> None:
        data = self._get(key)
        self.downloads += 1
        self.downloaded_bytes += len(data)
        with open(path, "wb") as f:
            f.write(data)

    def upload(self, key: str, path: str) -> int:
        with open(path, "rb") as f:
            self.objects[key] = f.read()
        return len(self.objects[key])

    def ends(self, key: str) -> tuple[bytes | None, bytes]:
        if key not in self.objects:
            return None, b""
        data = self.objects[key]
        return data[:4], data[-4:]

    def presigned_url(self, key: str, expires_s: int) -> str:
        return f"memory://{key}?expires={expires_s}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        self.objects[key] = bytes(data)
        return len(data)

    def get_bytes(self, key: str) -> bytes:
        return self._get(key)

    def _get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise FileNotFoundError(key) from None




_PORT_METHODS = ("put_parquet", "get_parquet", "exists", "delete_prefix", "download", "upload", "ends",
                 "presigned_url", "put_bytes", "get_bytes")


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class OffLoopObjectStore(MemoryObjectStore):
    """A `MemoryObjectStore` whose every port method fails (AssertionError) when called
    on a thread running an event loop: S3 calls are blocking, and an `async def` must
    hand them to a thread (`asyncio.to_thread`, `run_in_threadpool`). `calls` records
    (method, thread name) of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name not in _PORT_METHODS:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            assert not _on_event_loop(), f"ObjectStore.{name} was called on the event loop's thread"
            self.calls.append((name, threading.current_thread().name))
            return value(*args, **kwargs)

        return guarded


class FakeRunState:
    """The `RunState` port: each run's status (None for a run never seen). With
    `cancel_after=n`, the run reads CANCELED from the n+1-th question on (a cancel
    landing while the work is under way); `asked` counts the questions."""

    def __init__(self, statuses: dict[str, str] | None = None, cancel_after: int | None = None) -> None:
        self.statuses = dict(statuses or {})
        self.cancel_after = cancel_after
        self.asked = 0

    def cancel(self, run_id: str) -> None:
        self.statuses[run_id] = TaskStatusEnum.CANCELED.value

    async def status(self, run_id: str) -> str | None:
        self.asked += 1
        if self.cancel_after is not None and self.asked > self.cancel_after:
            return TaskStatusEnum.CANCELED.value
        return self.statuses.get(run_id)


@dataclass
class RecordingPublisher:
    """The `Publisher` port: what was published, in order. Each event must belong on its
    topic (as the Kafka publisher's serializer requires); with `away` set, publishing
    raises it, as a bus that cannot be reached does."""

    published: list[tuple[Topic, BaseModel]] = field(default_factory=list)
    away: Exception | None = None
    attempts: int = 0  # calls of publish, refused ones included

    async def publish(self, topic: Topic, event: BaseModel, key: str | None = None) -> None:
        self.attempts += 1
        if self.away is not None:
            raise self.away
        assert isinstance(event, topic.event), f"{type(event).__name__} does not belong on {topic.name}"
        self.published.append((topic, event))

    def on(self, topic: Topic) -> list[Any]:
        """The events published on `topic`."""
        return [e for t, e in self.published if t.name == topic.name]

    def of(self, kind: type) -> list[Any]:
        """The events of type `kind`, whatever their topic."""
        return [e for _, e in self.published if isinstance(e, kind)]


class MemoryProcessed:
    """The `ProcessedLog` port (clusterflow/idempotency.py)."""

    def __init__(self) -> None:
        self.done: set[tuple[str, str]] = set()

    async def seen(self, consumer: str, event_id: str) -> bool:
        return (consumer, event_id) in self.done

    async def mark(self, consumer: str, event_id: str) -> None:
        self.done.add((consumer, event_id))


class MemorySegmentLedger:
    """The `SegmentLedger` port (clusterflow/segments.py): the segments reported lost."""

    def __init__(self) -> None:
        self.lost: list[tuple[str, str]] = []

    async def mark_lost(self, key: str, reason: str) -> None:
        self.lost.append((key, reason))


class FakeJobs:
    """The Ray Jobs API the clusterer's RayEngine talks to (services/clusterer/ray_engine.py):
    job statuses in turn (the last one repeats), what was submitted and stopped."""

    address = "http://ray.test:8265"

    def __init__(self, statuses: list[dict | None]) -> None:
        self.statuses = statuses
        self.submitted: list[str] = []
        self.stopped: list[str] = []

    async def info(self, sid):
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    async def submit(self, sid, entrypoint, runtime_env):
        self.submitted.append(entrypoint)

    async def stop(self, sid):
        self.stopped.append(sid)

    async def logs_tail(self, sid, chars=1500):
        return "Traceback...\nValueError: algorithm_params.n_clusters (30) exceeds the number of points (20)\n"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class FakeGatewayRepository:
    """The gateway's repository over dicts, as far as the run routes use it: clusters,
    run requests (recorded by execute, canceled by cancel), executions and tasks rows
    shaped like the read models (`add_execution`); a request not yet projected reads
    back PENDING through clusterflow/readmodel.py, as from the real one. Rows are kept
    by (namespace, id) and every read is scoped by namespace; `namespaces` lists the
    namespace of each cluster lookup."""

    def __init__(self) -> None:
        self.clusters: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.executions: dict[tuple[str, str], dict[str, Any]] = {}
        self.tasks: dict[tuple[str, str], dict[str, Any]] = {}
        self.canceled: list[str] = []
        self.forgotten: list[str] = []
        self.namespaces: list[str] = []

    def add_cluster(self, namespace: str, cluster_id: str, **values: Any) -> dict[str, Any]:
        row = {"cluster_id": cluster_id, "namespace": namespace, "cluster_name": cluster_id,
               "collection_ids": ["col_1"], "clustering_method": "kmeans", "algorithm_params": {},
               "embedding_name": "text", "sample_size": None, "vis_n_components": 2, "layout_stability": "align",
               "filters": None, **values}
        self.clusters[namespace, cluster_id] = row
        return row

    def add_execution(self, namespace: str, cluster_id: str, run_id: str, status: str, **values: Any
                      ) -> dict[str, Any]:
        """A projected run, and its task row derived as the projector derives it."""
        run = {"run_id": run_id, "task_id": f"task_{run_id}", "namespace": namespace, "cluster_id": cluster_id,
               "status": status, "mode": "full", "progress": 1.0 if status in COMPLETED_STATUSES else 0.0,
               "stage": None, "created_at": _now(), "labels": None, "labeling_enabled": False, "inputs": None,
               "details": {}, "artifacts": None, "num_clusters": None, "centroids": None, **values}
        self.executions[namespace, run_id] = run
        self.tasks[namespace, run["task_id"]] = {**task_row(run), "created_at": run["created_at"],
                                                 "updated_at": run["created_at"]}
        return run

    def _pending(self, namespace: str, **match: str) -> dict[str, Any] | None:
        return next((r for r in self.requests.values()
                     if r["namespace"] == namespace and all(r[k] == v for k, v in match.items())), None)

    # --- the port --------------------------------------------------------------------

    async def get_cluster(self, namespace: str, cluster_id: str) -> dict[str, Any] | None:
        self.namespaces.append(namespace)
        for (ns, _), row in self.clusters.items():
            if ns == namespace and cluster_id in (row["cluster_id"], row["cluster_name"]):
                return dict(row)
        return None

    async def delete_cluster(self, namespace: str, cluster_id: str) -> bool:
        return self.clusters.pop((namespace, cluster_id), None) is not None

    async def record_run_request(self, *, run_id: str, task_id: str, namespace: str, cluster_id: str,
                                 options: dict[str, Any]) -> datetime:
        created = _now()
        self.requests[run_id] = {"run_id": run_id, "task_id": task_id, "namespace": namespace,
                                 "cluster_id": cluster_id, "options": options, "created_at": created,
                                 "canceled_at": None}
        return created

    async def forget_run_request(self, run_id: str) -> None:
        self.forgotten.append(run_id)
        self.requests.pop(run_id, None)

    async def record_cancel_request(self, run_id: str) -> None:
        self.canceled.append(run_id)
        request = self.requests.get(run_id)
        if request is not None and request["canceled_at"] is None:
            request["canceled_at"] = _now()

    async def queue_position(self, created_at: datetime) -> tuple[int, float | None]:
        """1 + the tasks still waiting that were created earlier; no pace (no run completed)."""
        waiting = {TaskStatusEnum.PENDING.value, TaskStatusEnum.QUEUED.value}
        projected = {task_id for _, task_id in self.tasks}
        ahead = sum(1 for t in self.tasks.values() if t["status"] in waiting and t["created_at"] < created_at)
        ahead += sum(1 for r in self.requests.values() if r["created_at"] < created_at and r["task_id"] not in projected)
        return ahead + 1, None

    async def get_task(self, namespace: str, task_id: str) -> dict[str, Any] | None:
        row = self.tasks.get((namespace, task_id))
        if row is not None:
            return dict(row)
        request = self._pending(namespace, task_id=task_id)
        if request is None:
            return None
        return {**task_row(run_from_request(request)), "created_at": request["created_at"],
                "updated_at": request["created_at"]}

    async def get_execution(self, namespace: str, cluster_id: str, run_id: str | None) -> dict[str, Any] | None:
        runs = [r for (ns, _), r in self.executions.items() if ns == namespace and r["cluster_id"] == cluster_id]
        if run_id is None:
            return dict(max(runs, key=lambda r: r["created_at"])) if runs else None
        found = next((r for r in runs if r["run_id"] == run_id), None)
        if found is not None:
            return {"run_name": None, "label_overrides": None, **found}
        request = self._pending(namespace, cluster_id=cluster_id, run_id=run_id)
        return run_from_request(request) if request is not None else None

    async def get_run(self, namespace: str, run_id: str) -> dict[str, Any] | None:
        run = self.executions.get((namespace, run_id))
        if run is not None:
            return dict(run)
        request = self._pending(namespace, run_id=run_id)
        return run_from_request(request) if request is not None else None

    async def latest_completed_full_run(self, namespace: str, cluster_id: str) -> dict[str, Any] | None:
        done = [r for (ns, _), r in self.executions.items()
                if ns == namespace and r["cluster_id"] == cluster_id and r["mode"] == "full"
                and r["status"] in COMPLETED_STATUSES and r.get("artifacts") and r.get("num_clusters")]
        return dict(max(done, key=lambda r: r["created_at"])) if done else None

    async def embedding_dimension(self, namespace: str, cluster_id: str) -> int | None:
        return (self.clusters.get((namespace, cluster_id)) or {}).get("dimension")


# --- the labeler's read ports and label cache (services/labeler/sources.py, cache.py) ---------

class MemoryResults:
    def __init__(self, members: pl.DataFrame, dataset: pl.DataFrame | None) -> None:
        self._members = members
        self._dataset = dataset
        self.vector_reads: list[int] = []

    def members(self, key: str) -> pl.DataFrame:
        return self._members

    def vectors(self, key: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        if self._dataset is None:
            return {}
        wanted = set(ids)
        self.vector_reads.append(len(wanted))
        frame = self._dataset.filter(pl.col("document_id").is_in(list(wanted)))
        return dict(zip(frame["document_id"].to_list(), frame["vector"].to_numpy()))


class MemoryDocuments:
    def __init__(self, payloads: dict[str, dict[str, Any]], collections: Sequence[str] = ("col_1",)) -> None:
        self._payloads = payloads
        self._collections = list(collections)
        self.requested: list[int] = []

    async def collection_ids(self, namespace: str, cluster_id: str) -> list[str]:
        return self._collections

    async def payloads(self, collection_ids: Sequence[str], document_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.requested.append(len(document_ids))
        return {i: self._payloads[i] for i in document_ids if i in self._payloads}


class MemoryCache:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.ttls: dict[str, int] = {}

    async def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {k: self.entries[k] for k in keys if k in self.entries}

    async def put_many(self, entries: dict[str, dict[str, Any]], *, model: str, ttl_seconds: int) -> None:
        for k, v in entries.items():
            self.entries[k] = v
            self.ttls[k] = ttl_seconds
