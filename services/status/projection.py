"""How events change a run's read model: a pure reducer, no I/O.

`apply(run, event)` takes the run's current row (the `executions` columns, or None
for a run not seen yet) and returns the new one. The projector persists it and derives
the task row from it (`task_row`; both in clusterflow/readmodel.py, which the gateway
shares). Events arrive from several topics, so their order across topics is not
guaranteed; the rules make the result independent of it:
- a terminal status (COMPLETED, COMPLETED_WITH_ERRORS, FAILED, CANCELED) is final;
- progress never goes back;
- a run completes when its request, its results and, if LLM labeling was asked for,
  its labels are in, whichever arrives last (a completed task always shows its inputs);
- labels that arrive after completion (the labeler's offline labels, for runs without
  LLM labeling) are merged into the finished run without changing its status;
- a cluster that came with a label (inherited through its stable id from the previous
  run, or from the source run of an assign or composite run) keeps it: the labeler's
  labels name only the clusters without one (all of them stay in the `labels` column).
"""
from __future__ import annotations

from datetime import datetime

from clusterflow import readmodel
from clusterflow.readmodel import SOURCE_RUN_IDS, Run, stored, task_row  # noqa: F401 - the store persists task_row(run)
from contracts.api import TERMINAL_STATUSES, TaskStatusEnum, applied_as
from contracts.events import (
    DEFERRED_LAYOUT_STAGE,
    LAYOUT_STABILITY_APPLIED,
    LAYOUT_STABILITY_REASON,
    ClustersLabeled,
    Event,
    ExecutionClustered,
    IMPORT_MODE,
    ExecutionRequested,
    ImportRequested,
    RunStatusChanged,
)

_ACTIVE = {TaskStatusEnum.PROCESSING.value, TaskStatusEnum.IN_PROGRESS.value}
_LAYOUT_DETAILS = (LAYOUT_STABILITY_APPLIED, LAYOUT_STABILITY_REASON)


def new_run(event: Event) -> Run:
    return readmodel.new_run(run_id=event.run_id, task_id=event.task_id, namespace=event.namespace,
                             cluster_id=event.cluster_id, created_at=event.occurred_at)


def is_terminal(run: Run) -> bool:
    return TaskStatusEnum(run["status"]) in TERMINAL_STATUSES


def apply(run: Run | None, event: Event) -> Run:
    run = dict(run) if run is not None else new_run(event)
    if isinstance(event, ExecutionRequested):
        return _requested(run, event)
    if isinstance(event, ImportRequested):
        return _import_requested(run, event)
    if isinstance(event, RunStatusChanged):
        return _status(run, event)
    if isinstance(event, ExecutionClustered):
        return _clustered(run, event)
    if isinstance(event, ClustersLabeled):
        return _labeled(run, event)
    raise TypeError(f"the projector does not handle {type(event).__name__}")


def _requested(run: Run, event: ExecutionRequested) -> Run:
    # A status report may have arrived first: only fill what it could not know.
    run["mode"] = event.options.mode.value
    if event.source_run_id and not run.get("source_run_id"):
        run["source_run_id"] = event.source_run_id
    if event.options.mode.value == "composite" and event.options.source_run_ids and \
            not run.get(SOURCE_RUN_IDS):
        run[SOURCE_RUN_IDS] = list(dict.fromkeys(event.options.source_run_ids))
    run["created_at"] = min(run["created_at"], event.occurred_at)
    run["inputs"] = [{
        "cluster_id": event.cluster_id,
        # The REST body's names, as the gateway showed them before this projection.
        "overrides": stored(event.options, exclude_none=True, exclude_defaults=True),
        "requested_by": event.requested_by,
    }]
    # Results projected before their request completed then: they say when (`completed_at`).
    return _maybe_complete(run, run.get("completed_at") or event.occurred_at)


def _import_requested(run: Run, event: ImportRequested) -> Run:
    """An import is a task like a run (its `cluster_id` is the collection's id); it ends
    by the preparer's status report, which carries its result (`details.import`)."""
    run["mode"] = IMPORT_MODE
    run["created_at"] = min(run["created_at"], event.occurred_at)
    run["inputs"] = [{"collection_id": event.collection_id, "source_key": None if event.staged else event.source_key,
                      "id_column": event.id_column, "embedding_columns": event.embedding_columns,
                      "payload_columns": event.payload_columns, "requested_by": event.requested_by}]
    return run


def _status(run: Run, event: RunStatusChanged) -> Run:
    facts = event.facts()  # typed fields, or a version 1 event's `details` keys
    if event.stage == DEFERRED_LAYOUT_STAGE:
        # A completed run's deferred layout: what it applied joins the run's details;
        # the run's status, stage and progress are not the layout's to change.
        run["details"] = {**run.get("details", {}), **{k: facts[k] for k in _LAYOUT_DETAILS if k in facts}}
        return run
    if is_terminal(run):
        # The result (another topic) may be projected before the progress reports: a
        # late one still says when the work began (the queue's mean run time needs it).
        if event.status.value in _ACTIVE and run.get("started_at") is None:
            run["started_at"] = event.occurred_at
        return run
    status = event.status.value
    if event.progress is not None:
        run["progress"] = max(run["progress"], event.progress)
    if event.stage:
        run["stage"] = event.stage
    if status in _ACTIVE and run.get("started_at") is None:
        run["started_at"] = event.occurred_at
    if event.details or facts:
        run["details"] = {**run.get("details", {}), **event.extra_details(), **facts}
        if "sampling" in facts:
            run["sampling"] = facts["sampling"]
        if "clustering_method" in facts:
            run["clustering_method"] = facts["clustering_method"]
        if "labeling_enabled" in facts:
            run["labeling_enabled"] = bool(facts["labeling_enabled"])
    if event.status in TERMINAL_STATUSES:
        run["completed_at"] = event.occurred_at
        if event.error:
            run["error_message"] = event.error
    run["status"] = status
    return run


def _clustered(run: Run, event: ExecutionClustered) -> Run:
    run.update(
        clustering_method=event.config.clustering_method,
        num_clusters=event.num_clusters,
        num_points=event.num_points,
        noise_count=event.noise_count,
        metrics=event.metrics.model_dump(),
        centroids=stored(event.centroids),
        artifacts=event.artifacts.model_dump(),
        labeling_enabled=event.config.labeling_enabled,
    )
    if event.sampling is not None:
        run["sampling"] = event.sampling.model_dump()
    run["mode"] = event.config.mode.value
    if event.source_run_id:
        run["source_run_id"] = event.source_run_id
    if event.source_run_ids:
        run[SOURCE_RUN_IDS] = list(event.source_run_ids)
    if event.lineage is not None:
        run["lineage"] = stored(event.lineage)
    if event.source_clusters:
        run["source_clusters"] = stored(event.source_clusters)
    run["details"] = {**run.get("details", {}), "estimator": event.estimator,
                      "algorithm_seconds": event.algorithm_seconds, "method_choice": event.method_choice,
                      "vis_n_components": event.config.vis_n_components,
                      "defer_visualization": event.config.defer_visualization, "seed": event.config.seed,
                      "layout_stability": event.config.layout_stability.value}
    if event.layout_stability_applied is not None:
        run["details"].update({LAYOUT_STABILITY_APPLIED: applied_as(event.layout_stability_applied).value,
                               LAYOUT_STABILITY_REASON: event.layout_stability_reason})
    return _maybe_complete(run, event.occurred_at)


def _labeled(run: Run, event: ClustersLabeled) -> Run:
    run["labels"] = stored(event.labels)
    if not is_terminal(run):
        run["llm_labeling_errors"] = event.llm_labeling_errors
    return _maybe_complete(run, event.occurred_at)


def _merge_labels(run: Run) -> None:
    # The run's stored labels and centroids: the group's id is under `cluster_id` there.
    if not run.get("labels") or not run.get("centroids"):
        return
    by_id = {label["cluster_id"]: label for label in run["labels"]}
    run["centroids"] = [
        {**c, **{k: by_id[c["cluster_id"]][k] for k in ("label", "summary", "keywords")
                 if c["cluster_id"] in by_id and c.get("label") is None}}
        for c in run["centroids"]
    ]


def _waiting(run: Run, stage: str, progress: float, **extra) -> Run:
    """Results in, the run still waits for the rest (its labels, its request)."""
    run.update(stage=stage, progress=max(run["progress"], progress), **extra)
    if run["status"] == TaskStatusEnum.PENDING.value:
        run["status"] = TaskStatusEnum.PROCESSING.value
    return run


def _maybe_complete(run: Run, at: datetime) -> Run:
    _merge_labels(run)
    if is_terminal(run) or run.get("artifacts") is None:
        return run
    if run["labeling_enabled"] and run.get("labels") is None:
        return _waiting(run, "labeling", 0.9)
    if run.get("inputs") is None:  # the request is still on its way to the projector
        return _waiting(run, "finishing", 0.95, completed_at=at)
    errors = run.get("llm_labeling_errors") or []
    run["status"] = (TaskStatusEnum.COMPLETED_WITH_ERRORS if errors else TaskStatusEnum.COMPLETED).value
    run.update(stage="completed", progress=1.0, completed_at=at)
    run.setdefault("started_at", None)
    return run
