"""The runs read model's pure rules that more than one service needs, written once:
what a run looks like before anything happened to it (`new_run`), and the task row
derived from a run (`task_row`, what `GET /v1/tasks/{id}` shows).

The status projector (services/status/projection.py) starts every run from `new_run`
and persists `task_row` of it; the gateway answers a run it accepted but the projector
has not seen yet (its `run_requests` row, `run_from_request`) with the same shapes, so
a task reads the same before and after its first projection.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from contracts.api import COMPLETED_STATUSES, TaskStatusEnum
from contracts.events import ERROR_TRACEBACK, IMPORT_MODE, task_type_for

# Run details the execution read serves but the task's additional_data does not repeat
# (the task has `error`; the traceback is for whoever debugs the execution).
_EXECUTION_ONLY = frozenset({ERROR_TRACEBACK})

Run = dict[str, Any]

# The executions read model keeps the key names its rows were first written with, the
# hosted API's (docs/vocabulary.md): past runs' rows read unchanged and the gateway serves
# them as they are. The events name a run's groups of points `group_id` and a composite
# run's sources `source_run_ids`; `stored` turns an event's model into the stored names,
# once, where the projector writes a run (the preparer reads them back into events
# through the events' aliases of the old names).
STORED_NAMES = {
    "group_id": "cluster_id",
    "parent_group_id": "parent_cluster_id",
    "child_group_ids": "child_cluster_ids",
    "source_group_id": "source_cluster_id",
    "previous_group_ids": "previous_cluster_ids",
    "current_group_ids": "current_cluster_ids",
    "source_run_ids": "source_execution_ids",
}
# The executions column of a composite run's source runs (events: `source_run_ids`).
SOURCE_RUN_IDS = STORED_NAMES["source_run_ids"]


def stored(value: Any, **dump: Any) -> Any:
    """An event's model (or a list of them) as JSON under the read model's names: the
    fields of the model and of the models in it are renamed (`STORED_NAMES`), never the
    keys of a free-form value (a filter's payload paths, a label's metadata). `dump`:
    `model_dump`'s options (exclude_none, ...)."""
    if isinstance(value, list):
        return [stored(v, **dump) for v in value]
    if not isinstance(value, BaseModel):
        return value
    out = {}
    for name, data in value.model_dump(**{"mode": "json", **dump}).items():
        attr = getattr(value, name, None)  # None: a key its serializer adds (LLMLabeling's hosted keys)
        if isinstance(attr, BaseModel) or (isinstance(attr, list) and any(isinstance(a, BaseModel) for a in attr)):
            data = stored(attr, **dump)
        out[STORED_NAMES.get(name, name)] = data
    return out


def new_run(*, run_id: str, task_id: str, namespace: str, cluster_id: str, created_at: datetime,
            mode: str = "full") -> Run:
    """A run accepted and not started: PENDING, queued, nothing known of its work yet."""
    return {
        "run_id": run_id,
        "task_id": task_id,
        "namespace": namespace,
        "cluster_id": cluster_id,
        "status": TaskStatusEnum.PENDING.value,
        "mode": mode,
        "progress": 0.0,
        "stage": "queued",
        "created_at": created_at,
        "labels": None,
        "labeling_enabled": False,
        "inputs": None,
        "details": {},
    }


def run_from_request(request: dict[str, Any]) -> Run:
    """The run of a `run_requests` row (what the gateway recorded when it accepted it)."""
    return new_run(run_id=request["run_id"], task_id=request["task_id"], namespace=request["namespace"],
                   cluster_id=request["cluster_id"], created_at=request["created_at"],
                   mode=(request.get("options") or {}).get("mode") or "full")


def task_row(run: Run) -> dict[str, Any]:
    """The `tasks` read model, derived from the run: what `GET /v1/tasks/{id}` shows."""
    metrics = run.get("metrics") or {}
    outputs = None
    done = run["status"] in COMPLETED_STATUSES
    if run.get("mode") == IMPORT_MODE:
        result = (run.get("details") or {}).get("import") or {}
        outputs = [{"collection_id": run["cluster_id"], "import_id": run["run_id"],
                    **{k: result.get(k) for k in ("rows", "imported", "bad_row_count")}}] if done else None
    elif done:
        outputs = [{
            "cluster_id": run["cluster_id"],
            "run_id": run["run_id"],
            "num_clusters": run.get("num_clusters"),
            "num_points": run.get("num_points"),
            "silhouette_score": metrics.get("silhouette_score"),
        }]
    additional = {
        "cluster_id": run["cluster_id"],
        "run_id": run["run_id"],
        "namespace_id": run["namespace"],
        "stage": run.get("stage"),
        **{k: v for k, v in (run.get("details") or {}).items() if v is not None and k not in _EXECUTION_ONLY},
    }
    if run.get("sampling"):
        additional["sampling"] = run["sampling"]
    additional["mode"] = run.get("mode") or "full"
    for key in ("source_run_id", SOURCE_RUN_IDS):
        if run.get(key):
            additional[key] = run[key]
    if run.get("lineage"):
        events = run["lineage"].get("events") or []
        additional["lineage"] = {
            "previous_run_id": run["lineage"].get("previous_run_id"),
            **{kind: sum(e["kind"] == kind for e in events)
               for kind in ("continued", "split", "merged", "new", "dissolved")},
        }
    if run.get("error_message"):
        additional["error"] = run["error_message"]
    return {
        "task_id": run["task_id"],
        "namespace": run["namespace"],
        "task_type": task_type_for(run.get("mode")),
        "status": run["status"],
        "run_id": run["run_id"],
        "cluster_id": run["cluster_id"],
        "inputs": run.get("inputs"),
        "outputs": outputs,
        "additional_data": additional,
        "error": run.get("error_message") if run["status"] == TaskStatusEnum.FAILED.value else None,
        "progress": run["progress"],
    }
