"""Executing a cluster, and reading runs back: tasks, executions and their data."""
from __future__ import annotations

import hashlib
from typing import Any

import polars as pl
from fastapi import APIRouter, Body, Query, Response
from fastapi.concurrency import run_in_threadpool

from clusterflow.storage import artifact_key

from clusterflow.messaging import report_status
from clusterflow.runs import source_problem
from contracts.api import (
    COMPLETED_STATUSES,
    MIN_COMPOSITE_SOURCES,
    TERMINAL_STATUSES,
    DynamicValue,
    ErrorResponse,
    ExecuteClusterByIdRequest,
    ExecutionMode,
    FilterCondition,
    TaskResponse,
    TaskStatusEnum,
    TaskType,
)
from contracts.events import (
    ERROR_TRACEBACK,
    LAYOUT_STABILITY_APPLIED,
    LAYOUT_STABILITY_REASON,
    ComputeLayout,
    ExecutionRequested,
    RunOptions,
    new_run_id,
    new_task_id,
)
from contracts.resources import (
    EXECUTION_STATUS,
    CentroidData,
    ClusterExecutionResult,
    ClusterGroupsResponse,
    ExecutionMetrics,
    ExportFormat,
    KillTaskResponse,
    ListTasksRequest,
    PatchExecutionLabelsResponse,
    PatchExecutionLabelsRequest,
    PatchExecutionRunNameRequest,
    PatchExecutionRunNameResponse,
    TaskList,
    ExecutionData,
    ExecutionDataRequest,
    ExecutionList,
    ListExecutionsRequest,
    MemberData,
    Pagination,
    Visualization,
    VisualizationPoint,
    unknown_keys,
)
from contracts.topics import EXECUTION_REQUESTED, LAYOUT_COMPUTE
from services.gateway.deps import CallerDep, GatewayDep, NamespaceDep, PageDep
from services.gateway.errors import ApiError, bad_request, not_found
from services.gateway.queueing import enqueue
from services.gateway.validation import (
    check_filters,
    check_supported,
    llm_labeling_fields,
    parse_filters,
)

router = APIRouter(tags=["Clusters"])
tasks_router = APIRouter(prefix="/v1/tasks", tags=["Tasks"])



@router.post(
    "/v1/clusters/{cluster_id}/execute",
    response_model=TaskResponse,
    responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def execute_clustering(
    cluster_id: str,
    gw: GatewayDep,
    ns: NamespaceDep,
    who: CallerDep,
    body: ExecuteClusterByIdRequest | None = Body(default=None),
) -> TaskResponse:
    """Queue a run and return its task at once; the work happens behind Kafka.

    mode=assign needs a completed full run of this cluster with centroids (its latest
    is pinned as the run's source); mode=composite needs >= 2 distinct
    source_execution_ids, each a completed run with centroids of any cluster of the
    caller's namespace, all of one embedding dimension. Otherwise: 400, naming the run.
    """
    options = body or ExecuteClusterByIdRequest()
    check_supported(llm_labeling_fields(options.llm_labeling))
    cluster = await gw.repo.get_cluster(ns, cluster_id)
    if cluster is None:
        raise not_found("cluster", cluster_id)
    source_run_id = None
    if options.mode is ExecutionMode.assign:
        source = await gw.repo.latest_completed_full_run(ns, cluster["cluster_id"])
        if source is None:
            raise bad_request(
                f"mode 'assign' needs a completed full run of cluster {cluster['cluster_id']} with centroids to "
                "assign documents to, and it has none yet; execute it with mode 'full' first",
                code="no_source_run", cluster_id=cluster["cluster_id"])
        source_run_id = source["run_id"]
    elif options.mode is ExecutionMode.composite:
        await _check_composite_sources(gw, ns, options.source_execution_ids)
    if options.filters is not None:
        if any(not _is_static(c) for c in options.filters.iter_conditions()):
            raise bad_request(
                "filters contain a dynamic value; an execution has no runtime inputs to resolve it from, "
                "so give the value itself",
                code="dynamic_value_not_allowed",
            )
        check_filters(options.filters)

    run_id, task_id = new_run_id(), new_task_id()
    cluster_id = cluster["cluster_id"]
    event = ExecutionRequested(namespace=ns, run_id=run_id, cluster_id=cluster_id, task_id=task_id,
                               options=run_options(options), requested_by=who, source_run_id=source_run_id)
    created_at = await enqueue(gw, EXECUTION_REQUESTED, event, options.model_dump(mode="json", exclude_none=True))

    position, mean_s = await gw.repo.queue_position(created_at)
    return TaskResponse(
        task_id=task_id,
        task_type=TaskType.engine_cluster_build,
        status=TaskStatusEnum.PENDING,
        inputs=[_inputs(cluster, options)],
        additional_data={"cluster_id": cluster_id, "run_id": run_id, "namespace_id": ns,
                         "collection_ids": cluster["collection_ids"], "progress": 0.0, "mode": options.mode.value,
                         **({"source_run_id": source_run_id} if source_run_id else {}),
                         **({"source_execution_ids": list(dict.fromkeys(options.source_execution_ids or []))}
                            if options.mode is ExecutionMode.composite else {})},
        queue_position=position,
        estimated_wait_minutes=_wait_minutes(position, mean_s),
    )


# Fields of the REST body that RunOptions names by clusterflow's vocabulary
# (docs/vocabulary.md): REST name -> RunOptions' name.
RENAMED_OPTIONS: dict[str, str] = {"source_execution_ids": "source_run_ids"}
# Fields of the REST body that the gateway alone acts on, so no worker needs them in
# RunOptions. A new field of ExecuteClusterByIdRequest goes into `run_options` or here
# (tests/unit/test_run_options.py fails until it does).
GATEWAY_ONLY: frozenset[str] = frozenset()


def run_options(body: ExecuteClusterByIdRequest) -> RunOptions:
    """The REST body's overrides as the event carries them to the workers."""
    return RunOptions(
        mode=body.mode,
        source_run_ids=body.source_execution_ids,
        assignment_threshold=body.assignment_threshold,
        filters=body.filters,
        sample_size=body.sample_size,
        vis_n_components=body.vis_n_components,
        defer_visualization=body.defer_visualization,
        llm_labeling=body.llm_labeling,
        hierarchical=body.hierarchical,
        max_hierarchy_depth=body.max_hierarchy_depth,
        layout_stability=body.layout_stability,
    )


async def _check_composite_sources(gw, ns: str, ids: list[str] | None) -> None:
    ids = ids or []
    if len(set(ids)) < MIN_COMPOSITE_SOURCES:
        raise bad_request(f"mode 'composite' needs at least {MIN_COMPOSITE_SOURCES} distinct source_execution_ids "
                          f"(got {len(set(ids))})", code="too_few_sources")
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise bad_request(f"source execution {twice} is listed twice", code="duplicate_source",
                          source_execution_id=twice)
    dims: dict[str, int | None] = {}
    for run_id in ids:
        run = await gw.repo.get_run(ns, run_id)
        problem = source_problem(run)
        if problem is not None:
            code, what = problem
            extra = {"status": run["status"]} if code == "source_not_completed" else {}
            raise bad_request(f"source execution {run_id} {what}: composite runs need completed runs with "
                              f"centroids in namespace {ns!r}", code=code, source_execution_id=run_id, **extra)
        dims[run_id] = await gw.repo.embedding_dimension(ns, run["cluster_id"])
    known = {d for d in dims.values() if d is not None}
    if len(known) > 1:
        first = dims[ids[0]]
        odd = next(r for r in ids if dims[r] is not None and dims[r] != first)
        raise bad_request(f"source execution {odd} has {dims[odd]}-dimensional centroids, {ids[0]} has {first}: "
                          "a composite run groups centroids of one embedding dimension",
                          code="dimension_mismatch", source_execution_id=odd)


def _is_static(condition: FilterCondition) -> bool:
    return not isinstance(condition.value, DynamicValue)


def _inputs(cluster: dict[str, Any], options: ExecuteClusterByIdRequest) -> dict[str, Any]:
    return {
        "collection_ids": cluster["collection_ids"],
        "config": {
            "algorithm": cluster["clustering_method"],
            "algorithm_params": cluster["algorithm_params"],
            "embedding_name": cluster["embedding_name"],
            "sample_size": options.sample_size or cluster["sample_size"],
        },
        "overrides": options.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
    }


def _wait_minutes(position: int, mean_s: float | None) -> float | None:
    if mean_s is None:
        return None
    return round((position - 1) * mean_s / 60.0, 2)


# --- tasks ------------------------------------------------------------------------------

def task_response(row: dict[str, Any]) -> TaskResponse:
    extra = dict(row.get("additional_data") or {})
    extra.setdefault("cluster_id", row["cluster_id"])
    extra.setdefault("run_id", row["run_id"])
    extra["progress"] = row.get("progress", 0.0)
    if row.get("error"):
        extra["error"] = row["error"]
    return TaskResponse(
        task_id=row["task_id"], task_type=row["task_type"], status=row["status"],
        inputs=row.get("inputs"), outputs=row.get("outputs"), additional_data=extra,
        error=row.get("error"),
    )


@tasks_router.get("/{task_id}", response_model=TaskResponse)
async def get_task(task_id: str, gw: GatewayDep, ns: NamespaceDep) -> TaskResponse:
    row = await gw.repo.get_task(ns, task_id)
    if row is None:
        raise not_found("task", task_id)
    response = task_response(row)
    if response.status in (TaskStatusEnum.PENDING, TaskStatusEnum.QUEUED):
        position, mean_s = await gw.repo.queue_position(row["created_at"])
        response.queue_position = position
        response.estimated_wait_minutes = _wait_minutes(position, mean_s)
    return response


# --- executions -------------------------------------------------------------------------

async def _cluster_or_404(gw, ns: str, cluster_id: str) -> dict:
    cluster = await gw.repo.get_cluster(ns, cluster_id)
    if cluster is None:
        raise not_found("cluster", cluster_id)
    return cluster


def execution_result(row: dict[str, Any]) -> ClusterExecutionResult:
    """A run as the hosted SDK reads it: lowercase status, integer counts, the label
    overrides applied to the centroids, the partition's shape, and the input
    reconciliation (how many documents the selection matched, how many vectors were
    read, how many points were clustered, and why they differ)."""
    details = row.get("details") or {}
    overrides = row.get("label_overrides") or {}
    centroids = [{**c, "label": overrides.get(c["cluster_id"], c.get("label"))} for c in row.get("centroids") or []]
    errors = row.get("llm_labeling_errors") or []
    num_points = row.get("num_points") or 0
    metrics = None
    if row.get("metrics") is not None or centroids:
        metrics = ExecutionMetrics.of(row.get("metrics") or {}, centroids, row.get("noise_count"), num_points)
    return ClusterExecutionResult.model_validate({
        **row,
        "status": EXECUTION_STATUS.get(row["status"], "processing"),
        "task_status": row["status"],
        "num_clusters": row.get("num_clusters") or 0,
        "num_points": num_points,
        "centroids": centroids,
        "metrics": metrics,
        "llm_labeling_errors": [_error_line(e) for e in errors],
        "llm_labeling_error_details": [e for e in errors if isinstance(e, dict)],
        "label_overrides": overrides,
        "error_traceback": details.get(ERROR_TRACEBACK),
        **{k: details.get(k) for k in (LAYOUT_STABILITY_APPLIED, LAYOUT_STABILITY_REASON)},
        **_reconciliation(row, num_points),
    })


def _error_line(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    where = error.get("cluster_id")
    return f"{where}: {error.get('error')}" if where else str(error.get("error", error))


def _reconciliation(row: dict[str, Any], clustered: int) -> dict[str, Any]:
    sampling = row.get("sampling")
    if not sampling or row.get("status") not in COMPLETED_STATUSES:
        return {}
    matched, read = sampling["matched"], sampling["sampled"]
    reasons = []
    if read < matched:
        reasons.append(f"sampled {read} of the {matched} matching documents"
                       + (f" ({sampling['reason']})" if sampling.get("reason") else ""))
    if clustered != read:
        reasons.append(f"{read - clustered} vectors read were not clustered")
    return {"source_documents": matched, "vectors_retrieved": read, "vectors_clustered": clustered,
            "index_gap": matched - read, "pipeline_drop": read - clustered,
            # A gap a sample explains is what the run asked for; any other is not.
            "input_reconciliation_ok": clustered == read, "input_reconciliation_reasons": reasons}


@router.get("/v1/clusters/{cluster_id}/executions", response_model=ClusterExecutionResult | None)
async def latest_execution(cluster_id: str, gw: GatewayDep, ns: NamespaceDep) -> ClusterExecutionResult | None:
    """The cluster's latest run; null (200) for a cluster never executed, as the hosted API answers."""
    cluster = await _cluster_or_404(gw, ns, cluster_id)
    row = await gw.repo.get_execution(ns, cluster["cluster_id"], None)
    return execution_result(row) if row is not None else None


@router.get("/v1/clusters/{cluster_id}/executions/{run_id}", response_model=ClusterExecutionResult)
async def get_execution(cluster_id: str, run_id: str, gw: GatewayDep, ns: NamespaceDep) -> ClusterExecutionResult:
    cluster = await _cluster_or_404(gw, ns, cluster_id)
    row = await gw.repo.get_execution(ns, cluster["cluster_id"], run_id)
    if row is None:
        raise not_found("execution", run_id)
    return execution_result(row)


@router.post("/v1/clusters/{cluster_id}/executions/list", response_model=ExecutionList)
async def list_executions(cluster_id: str, gw: GatewayDep, ns: NamespaceDep, page: PageDep,
                          body: ListExecutionsRequest | None = None) -> ExecutionList:
    """Filter by `status` (either spelling), dates, counts and silhouette, by the
    SDK's `filters` (a LogicalOperator over the fields of repository.EXECUTION_FIELDS)
    and `search` (a substring of the run's name, id or status)."""
    cluster = await _cluster_or_404(gw, ns, cluster_id)
    body = body or ListExecutionsRequest()
    if body.sort.field not in {"created_at", "completed_at", "num_clusters", "num_points"}:
        raise bad_request(f"cannot sort executions by {body.sort.field!r}", code="invalid_sort")
    rows, total, stats = await gw.repo.list_executions(
        ns, cluster["cluster_id"], body, filters=parse_filters(body.filters) if body.filters else None,
        limit=page.limit, offset=page.offset)
    by_status: dict[str, int] = {}
    for status, n in stats["executions_by_status"].items():
        key = EXECUTION_STATUS.get(status, status.lower())
        by_status[key] = by_status.get(key, 0) + n
    stats = {**stats, "executions_by_status": by_status}
    return ExecutionList(results=[execution_result(r) for r in rows],
                         pagination=Pagination.of(page.limit, page.offset, total),
                         total_count=total, stats=stats, warnings=unknown_keys(body))


async def run_with_results(gw, ns: str, cluster_id: str, run_id: str) -> tuple[dict, dict, dict]:
    """The cluster, the run and its artifacts; 404 for an unknown run, 400 before results exist."""
    cluster = await _cluster_or_404(gw, ns, cluster_id)
    row = await gw.repo.get_execution(ns, cluster["cluster_id"], run_id)
    if row is None:
        raise not_found("execution", run_id)
    artifacts = row.get("artifacts")
    if not artifacts:
        raise bad_request(f"run {run_id} has no results yet (status {row['status']})", code="results_not_ready",
                          status=row["status"])
    return cluster, row, artifacts


@router.post("/v1/clusters/{cluster_id}/executions/{run_id}/data", response_model=ExecutionData)
async def execution_data(cluster_id: str, run_id: str, gw: GatewayDep, ns: NamespaceDep,
                         body: ExecutionDataRequest | None = None) -> ExecutionData:
    _, row, artifacts = await run_with_results(gw, ns, cluster_id, run_id)
    body = body or ExecutionDataRequest()
    return await run_in_threadpool(_read_data, gw.store, row, artifacts, body)


_SUMMARY_FIELDS = ("label", "summary", "stable_id", "parent_cluster_id", "hierarchy_level")


def _read_data(store, row: dict, artifacts: dict, body: ExecutionDataRequest) -> ExecutionData:
    result = ExecutionData(run_id=row["run_id"], cluster_id=row["cluster_id"])
    labels = {c["cluster_id"]: c for c in row.get("centroids") or []}
    if body.include_centroids:
        frame = store.get_parquet(artifacts["centroids_key"])
        result.centroids = [
            CentroidData(
                **{k: labels.get(r["cluster_id"], {}).get(k) for k in _SUMMARY_FIELDS},
                keywords=labels.get(r["cluster_id"], {}).get("keywords") or [],
                child_cluster_ids=labels.get(r["cluster_id"], {}).get("child_cluster_ids") or [],
                cluster_id=r["cluster_id"], num_members=r["num_members"],
                centroid_vector=list(r["centroid"]) if body.include_centroid_vectors and r["centroid"] is not None
                else None,
            )
            for r in frame.iter_rows(named=True)
        ]
        # The hierarchy's topics: in the run's centroid summaries only (members belong to
        # the clusters under them); listed after the clusters, noise last.
        stored = set(frame["cluster_id"].to_list())
        topics = [CentroidData.model_validate(c) for c in row.get("centroids") or []
                  if c["cluster_id"] not in stored and c.get("child_cluster_ids")]
        noise = [c for c in result.centroids if c.cluster_id == "cl_-1"]
        result.centroids = [c for c in result.centroids if c.cluster_id != "cl_-1"] + topics + noise
    if body.include_members:
        members = store.get_parquet(artifacts["members_key"])
        if body.cluster_id is not None:  # a topic's members are those of the clusters under it
            members = members.filter(pl.col("cluster_id").is_in(_leaves_under(row.get("centroids") or [],
                                                                              body.cluster_id)))
        total = members.height
        page = members.slice(body.offset, body.limit)
        coords_key = _coords_key(row, artifacts)
        if artifacts.get("coords_key") or store.exists(coords_key):
            page = page.join(store.get_parquet(coords_key), on="document_id", how="left")
        result.members = [MemberData.model_validate(r) for r in page.iter_rows(named=True)]
        result.pagination = Pagination.of(body.limit, body.offset, total)
    return result


def _leaves_under(centroids: list[dict], group_id: str) -> list[str]:
    """The groups under `group_id` in the run's stored centroids (REST names: `cluster_id`)."""
    children = {c["cluster_id"]: c.get("child_cluster_ids") or [] for c in centroids}
    todo, leaves, seen = [group_id], [], set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if children.get(node):
            todo.extend(children[node])
        else:
            leaves.append(node)
    return leaves


# --- visualization ----------------------------------------------------------------------

LAYOUT_POLL_S = 2.0


@router.get("/v1/clusters/{cluster_id}/executions/{run_id}/visualization", response_model=Visualization,
            responses={202: {"model": Visualization,
                             "description": "The deferred layout is being computed: `status` is \"computing\", "
                             "no points; poll the same URL after `Retry-After` seconds."},
                       400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def visualization(cluster_id: str, run_id: str, gw: GatewayDep, ns: NamespaceDep, response: Response,
                        offset: int = Query(0, ge=0, le=2_147_483_647),
                        limit: int = Query(10_000, ge=1, le=100_000)) -> Visualization:
    """Per-document coordinates with cluster ids and labels, paged. It answers at once:
    a run executed with `defer_visualization` whose layout is not stored yet gets 202
    `status: "computing"`; the first such call (of any gateway replica: a Postgres row
    decides) sends the clusterer a `ComputeLayout` command, which stores the layout at
    the run's deterministic `coords` key, read by later calls and the data endpoint."""
    cluster, row, artifacts = await run_with_results(gw, ns, cluster_id, run_id)
    if row.get("mode") == ExecutionMode.composite.value:
        raise bad_request(f"run {run_id} is a composite run: its members come from several runs and have no "
                          "layout of their own; view its source runs", code="no_layout_for_composite")
    details = row.get("details") or {}
    n_components = details.get("vis_n_components") or cluster["vis_n_components"]
    key = _coords_key(row, artifacts)
    if not await run_in_threadpool(gw.store.exists, key):
        state = await gw.repo.claim_layout(ns, run_id)
        if state.claimed:
            await gw.publisher.publish(LAYOUT_COMPUTE, ComputeLayout(
                namespace=ns, run_id=run_id, cluster_id=cluster["cluster_id"], task_id=row["task_id"],
                manifest_key=artifact_key(ns, cluster["cluster_id"], run_id, "manifest"), coords_key=key,
                num_points=int(row.get("num_points") or 0), n_components=n_components,
                seed=details.get("seed", 42),
                layout_stability=details.get("layout_stability") or cluster["layout_stability"],
                previous_run_id=_layout_predecessor(row), embedding_name=cluster["embedding_name"]))
        # the clusterer may have finished between the check and the claim
        if state.claimed or not await run_in_threadpool(gw.store.exists, key):
            failed = state.status == "failed"
            if not failed:
                response.status_code = 202
                response.headers["Retry-After"] = str(int(LAYOUT_POLL_S))
            return Visualization(
                run_id=run_id, cluster_id=cluster["cluster_id"], n_components=n_components,
                computed_now=state.claimed, points=[], pagination=Pagination.of(limit, offset, 0),
                status="failed" if failed else "computing", error=state.error,
                retry_after_s=None if failed else LAYOUT_POLL_S)
    labels = {c["cluster_id"]: c.get("label") for c in row.get("centroids") or []}
    page = await run_in_threadpool(_layout_page, gw.store, artifacts["members_key"], key, offset, limit)
    total, frame = page
    return Visualization(
        run_id=run_id, cluster_id=cluster["cluster_id"], n_components=3 if "z" in frame.columns else 2,
        computed_now=False,
        points=[VisualizationPoint(**r, label=labels.get(r["cluster_id"])) for r in frame.iter_rows(named=True)],
        pagination=Pagination.of(limit, offset, total),
    )


def _layout_predecessor(row: dict) -> str | None:
    """The run whose map a deferred layout keeps the shape of: a full run's previous
    completed full run (as its lineage matched it, when it ran), an assign run's source."""
    return (row.get("lineage") or {}).get("previous_run_id") or row.get("source_run_id")


def _coords_key(row: dict, artifacts: dict) -> str:
    """Inline layouts name their key; deferred ones live at the run's deterministic key."""
    return artifacts.get("coords_key") or artifact_key(row["namespace"], row["cluster_id"], row["run_id"], "coords")


def _layout_page(store, members_key: str, coords_key: str, offset: int, limit: int) -> tuple[int, pl.DataFrame]:
    members = store.get_parquet(members_key, columns=["document_id", "cluster_id"])
    page = members.slice(offset, limit).join(store.get_parquet(coords_key), on="document_id", how="left")
    return members.height, page


# --- cancellation -----------------------------------------------------------------------

async def _cancel(gw, ns: str, row: dict[str, Any], *, finished_ok: bool) -> TaskResponse:
    """Ask for the run to end as CANCELED. The projector applies it unless the run ended
    first (terminal statuses are final); workers stop at their next stage boundary."""
    status = TaskStatusEnum(row["status"])
    if status in TERMINAL_STATUSES:
        if finished_ok and status is TaskStatusEnum.CANCELED:
            return task_response({**row, "task_type": TaskType.engine_cluster_build.value})
        raise bad_request(f"run {row['run_id']} already ended {status.value}; only pending or running runs "
                          "can be canceled", code="run_finished", status=status.value)
    # Recorded first: workers read it at their next stage boundary, even while the
    # projector has not applied the CANCELED event yet.
    await gw.repo.record_cancel_request(row["run_id"])
    event = ExecutionRequested(namespace=ns, run_id=row["run_id"], cluster_id=row["cluster_id"],
                               task_id=row["task_id"])
    try:
        await report_status(gw.publisher, event, service="gateway", status=TaskStatusEnum.CANCELED,
                            stage="canceled", message="canceled by request", error="canceled by request")
    except Exception as exc:
        # The work stops anyway (the record above); the task shows CANCELED once a retry publishes.
        raise ApiError(503, "The cancel was recorded but could not be published: the event bus is "
                       "unavailable; retry shortly", code="event_bus_unavailable",
                       details={"error": str(exc)}) from exc
    return TaskResponse(task_id=row["task_id"], task_type=TaskType.engine_cluster_build,
                        status=TaskStatusEnum.CANCELED,
                        additional_data={"cluster_id": row["cluster_id"], "run_id": row["run_id"]})


@router.post("/v1/clusters/{cluster_id}/executions/{run_id}/cancel", response_model=TaskResponse)
async def cancel_execution(cluster_id: str, run_id: str, gw: GatewayDep, ns: NamespaceDep) -> TaskResponse:
    cluster = await _cluster_or_404(gw, ns, cluster_id)
    row = await gw.repo.get_execution(ns, cluster["cluster_id"], run_id)
    if row is None:
        raise not_found("execution", run_id)
    return await _cancel(gw, ns, {**row, "namespace": ns}, finished_ok=False)


@tasks_router.delete("/{task_id}", response_model=KillTaskResponse)
async def kill_task(task_id: str, gw: GatewayDep, ns: NamespaceDep) -> KillTaskResponse:
    """Idempotent for a task already canceled; a task that completed or failed is a 400."""
    row = await gw.repo.get_task(ns, task_id)
    if row is None:
        raise not_found("task", task_id)
    task = await _cancel(gw, ns, row, finished_ok=True)
    return KillTaskResponse(**task.model_dump(), success=True, message=f"task {task_id} canceled")


# --- the hosted SDK's other run routes --------------------------------------------------

@tasks_router.post("/list", response_model=TaskList)
async def list_tasks(gw: GatewayDep, ns: NamespaceDep, page: PageDep,
                     body: ListTasksRequest | None = None) -> TaskList:
    """The namespace's tasks (newest first unless `sort` says otherwise); by `status` and `task_type`,
    `filters` (a LogicalOperator over repository.TASK_FIELDS) and `search` (id, status, type)."""
    body = body or ListTasksRequest()
    if body.sort.field not in ("created_at", "updated_at"):
        raise bad_request(f"cannot sort tasks by {body.sort.field!r}; use created_at or updated_at",
                          code="invalid_sort")
    rows, total = await gw.repo.list_tasks(ns, statuses=[body.status.value] if body.status else None,
                                           task_type=body.task_type, sort_field=body.sort.field,
                                           descending=body.sort.direction == "desc", limit=page.limit,
                                           offset=page.offset, search=body.search,
                                           filters=parse_filters(body.filters) if body.filters else None)
    return TaskList(results=[task_response(r) for r in rows], pagination=Pagination.of(page.limit, page.offset, total),
                    warnings=unknown_keys(body))


async def _latest_completed(gw, ns: str, cluster_id: str, run_id: str | None) -> tuple[dict, dict | None]:
    cluster = await _cluster_or_404(gw, ns, cluster_id)
    if run_id is not None:
        row = await gw.repo.get_execution(ns, cluster["cluster_id"], run_id)
        if row is None:
            raise not_found("execution", run_id)
        return cluster, row
    return cluster, await gw.repo.latest_completed_full_run(ns, cluster["cluster_id"])


@router.get("/v1/clusters/{cluster_id}/groups", response_model=ClusterGroupsResponse)
async def cluster_groups(cluster_id: str, gw: GatewayDep, ns: NamespaceDep) -> ClusterGroupsResponse:
    """The groups (clusters, noise excluded) of the latest completed full run, with their labels."""
    cluster, row = await _latest_completed(gw, ns, cluster_id, None)
    if row is None:
        return ClusterGroupsResponse(cluster_id=cluster["cluster_id"], total_groups=0, total_documents=0, groups=[])
    result = execution_result(row)
    groups = [{"cluster_id": c.cluster_id, "label": c.label, "summary": c.summary, "keywords": c.keywords,
               "member_count": c.num_members} for c in result.centroids if c.cluster_id != "cl_-1"]
    return ClusterGroupsResponse(cluster_id=cluster["cluster_id"], run_id=row["run_id"], total_groups=len(groups),
                                 total_documents=result.num_points, groups=groups)


@router.get("/v1/clusters/{cluster_id}/visualization", responses={202: {"model": Visualization}},
            response_model=dict[str, Any])
async def cluster_visualization(
    cluster_id: str, gw: GatewayDep, ns: NamespaceDep, response: Response,
    run_id: str | None = Query(None, max_length=64, description="A run of the cluster (default: the latest "
                               "completed full run)."),
    max_points: int = Query(10_000, ge=1, le=100_000),
    compact: bool = Query(False, description="Points as [x, y(, z), cluster_id, document_id] arrays."),
    centroids_only: bool = Query(False, description="Only the clusters: their mean position and size."),
) -> dict[str, Any]:
    """The layout of a cluster's run, as the hosted API's cluster-level visualization:
    the points (up to `max_points`), or only the clusters' centres. A deferred layout
    not computed yet is answered 202 as `.../executions/{run_id}/visualization` does."""
    cluster, row = await _latest_completed(gw, ns, cluster_id, run_id)
    if row is None:
        raise bad_request(f"cluster {cluster['cluster_id']} has no completed run to show yet",
                          code="results_not_ready")
    view = await visualization(cluster["cluster_id"], row["run_id"], gw, ns, response, offset=0,
                               limit=max_points)
    body = view.model_dump(mode="json")
    labels = {c["cluster_id"]: c for c in execution_result(row).model_dump(mode="json")["centroids"]}
    if view.status == "ready" and centroids_only:
        body["centroids"] = await run_in_threadpool(_centroid_positions, gw.store, row, labels)
        body["points"] = []
    elif compact:
        axes = ["x", "y", "z"][: view.n_components]
        body["points"] = [[p[a] for a in axes] + [p["cluster_id"], p["document_id"]] for p in body["points"]]
        body["point_fields"] = [*axes, "cluster_id", "document_id"]
    return body


def _centroid_positions(store, row: dict, labels: dict[str, dict]) -> list[dict[str, Any]]:
    """Each cluster's mean layout position over all its members (a group-by of the
    stored coordinates; the layout itself is the clusterer's)."""
    artifacts = row["artifacts"]
    members = store.get_parquet(artifacts["members_key"], columns=["document_id", "cluster_id"])
    coords = store.get_parquet(_coords_key(row, artifacts))
    axes = [a for a in ("x", "y", "z") if a in coords.columns]
    frame = members.join(coords, on="document_id").group_by("cluster_id").agg(
        pl.len().alias("num_members"), *[pl.col(a).mean() for a in axes]).sort("cluster_id")
    return [{**r, "label": labels.get(r["cluster_id"], {}).get("label")} for r in frame.iter_rows(named=True)]


EXPORT_URL_SECONDS = 3600


@router.get("/v1/clusters/{cluster_id}/executions/{run_id}/export", response_model=None,
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
async def export_execution(cluster_id: str, run_id: str, gw: GatewayDep, ns: NamespaceDep,
                           format: ExportFormat = Query("parquet"),
                           cluster_label: str | None = Query(None, max_length=256,
                                                             description="Only the members of clusters with this label."),
                           ) -> Any:
    """A run's members with their cluster, label and layout position: `csv` in the
    answer, or `parquet` written once to the run's S3 prefix and answered as a
    presigned URL (valid EXPORT_URL_SECONDS)."""
    _, row, artifacts = await run_with_results(gw, ns, cluster_id, run_id)
    labels = {c.cluster_id: c.label for c in execution_result(row).centroids}
    if cluster_label is not None and cluster_label not in labels.values():
        raise bad_request(f"no cluster of run {run_id} has the label {cluster_label!r}", code="unknown_label")
    frame = await run_in_threadpool(_export_frame, gw.store, row, artifacts, labels, cluster_label)
    if format == "csv":
        text = await run_in_threadpool(frame.write_csv)
        return Response(content=text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{row["run_id"]}.csv"'})
    key = artifact_key(ns, row["cluster_id"], row["run_id"], "export" if cluster_label is None else
                       f"export-{hashlib.sha256(cluster_label.encode()).hexdigest()[:16]}")
    await run_in_threadpool(gw.store.put_parquet, key, frame)
    url = await run_in_threadpool(gw.store.presigned_url, key, EXPORT_URL_SECONDS)
    return {"run_id": row["run_id"], "cluster_id": row["cluster_id"], "format": "parquet", "url": url,
            "download_url": url, "s3_key": key, "expires_in_seconds": EXPORT_URL_SECONDS, "rows": frame.height}


def _export_frame(store, row: dict, artifacts: dict, labels: dict[str, str | None],
                  cluster_label: str | None) -> pl.DataFrame:
    members = store.get_parquet(artifacts["members_key"])
    keep = [c for c in ("document_id", "cluster_id", "distance_to_centroid") if c in members.columns]
    frame = members.select(keep).with_columns(
        pl.col("cluster_id").replace_strict(labels, default=None, return_dtype=pl.String).alias("label"))
    coords_key = _coords_key(row, artifacts)
    if artifacts.get("coords_key") or store.exists(coords_key):
        frame = frame.join(store.get_parquet(coords_key), on="document_id", how="left")
    if cluster_label is not None:
        frame = frame.filter(pl.col("label") == cluster_label)
    return frame


async def _run_of(gw, ns: str, cluster_id: str, run_id: str) -> tuple[dict, dict]:
    cluster = await _cluster_or_404(gw, ns, cluster_id)
    row = await gw.repo.get_execution(ns, cluster["cluster_id"], run_id)
    if row is None:
        raise not_found("execution", run_id)
    return cluster, row


@router.patch("/v1/clusters/{cluster_id}/executions/{run_id}/labels", response_model=PatchExecutionLabelsResponse)
async def patch_execution_labels(cluster_id: str, run_id: str, body: PatchExecutionLabelsRequest, gw: GatewayDep,
                                 ns: NamespaceDep) -> PatchExecutionLabelsResponse:
    """Override clusters' labels of one run (merged into earlier overrides); reads of
    the run show them in place of the labeler's."""
    cluster, row = await _run_of(gw, ns, cluster_id, run_id)
    known = {c["cluster_id"] for c in row.get("centroids") or []}
    unknown = sorted(set(body.labels) - known)
    if unknown:
        raise bad_request(f"run {run_id} has no cluster {unknown[0]} (its clusters: {sorted(known)})",
                          code="unknown_cluster", cluster_ids=unknown)
    saved = await gw.repo.annotate_run(ns, cluster["cluster_id"], row["run_id"], labels=body.labels)
    return PatchExecutionLabelsResponse(cluster_id=cluster["cluster_id"], run_id=row["run_id"],
                                        label_overrides=saved["label_overrides"])


@router.patch("/v1/clusters/{cluster_id}/executions/{run_id}/name", response_model=PatchExecutionRunNameResponse)
async def patch_execution_run_name(cluster_id: str, run_id: str, body: PatchExecutionRunNameRequest,
                                   gw: GatewayDep, ns: NamespaceDep) -> PatchExecutionRunNameResponse:
    cluster, row = await _run_of(gw, ns, cluster_id, run_id)
    saved = await gw.repo.annotate_run(ns, cluster["cluster_id"], row["run_id"], run_name=body.run_name)
    return PatchExecutionRunNameResponse(cluster_id=cluster["cluster_id"], run_id=row["run_id"],
                                         run_name=saved["run_name"])
