"""The status projector's reducer: same read model whatever order events arrive in."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from contracts.api import LayoutStability, LayoutStabilityApplied, LLMLabeling, TaskStatusEnum
from contracts.events import (
    DEFERRED_LAYOUT_STAGE,
    CentroidSummary,
    ClusterLabel,
    ClusteringConfig,
    ClusterMetrics,
    ClustersLabeled,
    ExecutionClustered,
    ExecutionRequested,
    ResultArtifacts,
    RunStatusChanged,
    SamplingInfo,
)
from services.status.projection import apply, task_row

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
IDS = dict(namespace="ns", run_id="run_1", cluster_id="clust_1", task_id="task_1")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def requested() -> ExecutionRequested:
    return ExecutionRequested(**IDS, occurred_at=at(0))


def status(s: TaskStatusEnum, progress: float | None, seconds: float, **kw) -> RunStatusChanged:
    return RunStatusChanged(**IDS, status=s, service="preparer", progress=progress, occurred_at=at(seconds), **kw)


def clustered(labeling: bool = False) -> ExecutionClustered:
    return ExecutionClustered(
        **IDS, occurred_at=at(10),
        artifacts=ResultArtifacts(members_key="m", centroids_key="c"),
        num_clusters=2, num_points=10,
        metrics=ClusterMetrics(silhouette_score=0.5),
        centroids=[CentroidSummary(cluster_id="cl_0", num_members=6), CentroidSummary(cluster_id="cl_1", num_members=4)],
        config=ClusteringConfig(clustering_method="kmeans", embedding_name="text",
                                llm_labeling=LLMLabeling(enabled=labeling)),
    )


def labeled(errors: list | None = None) -> ClustersLabeled:
    return ClustersLabeled(**IDS, occurred_at=at(12), labels=[
        ClusterLabel(cluster_id="cl_0", label="Cats", keywords=["cat"]),
        ClusterLabel(cluster_id="cl_1", label="Dogs", keywords=["dog"]),
    ], llm_labeling_errors=errors or [])


def fold(events):
    run = None
    for e in events:
        run = apply(run, e)
    return run


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_completion_does_not_depend_on_event_order(order):
    events = [requested(), status(TaskStatusEnum.PROCESSING, 0.2, 1), status(TaskStatusEnum.PROCESSING, 0.6, 5),
              clustered()]
    run = fold(events[i] for i in order)
    assert run["status"] == "COMPLETED"
    assert run["progress"] == 1.0 and run["num_clusters"] == 2
    assert run["inputs"] is not None  # the request's inputs, even when it arrived last
    assert run["completed_at"] == at(10)  # when the results came, not when the request was projected


def test_results_before_their_request_do_not_complete_the_task():
    """A task is never COMPLETED without its inputs: a client that reads it at once sees them."""
    run = fold([status(TaskStatusEnum.PROCESSING, 0.6, 5), clustered()])
    assert run["status"] == "PROCESSING" and run["stage"] == "finishing" and task_row(run)["inputs"] is None
    run = apply(run, requested())
    assert run["status"] == "COMPLETED" and task_row(run)["inputs"][0]["cluster_id"] == "clust_1"


def test_labeling_run_waits_for_labels_then_merges_them():
    run = fold([requested(), clustered(labeling=True)])
    assert run["status"] == "PROCESSING" and run["stage"] == "labeling"
    run = apply(run, labeled())
    assert run["status"] == "COMPLETED"
    assert [c["label"] for c in run["centroids"]] == ["Cats", "Dogs"]


def test_labels_before_results_complete_the_run_when_results_arrive():
    run = fold([requested(), labeled(), clustered(labeling=True)])
    assert run["status"] == "COMPLETED" and run["centroids"][1]["label"] == "Dogs"


def test_labeling_errors_end_completed_with_errors():
    run = fold([requested(), clustered(labeling=True), labeled(errors=[{"cluster_id": "cl_1", "error": "bad"}])])
    assert run["status"] == "COMPLETED_WITH_ERRORS"


def test_offline_labels_after_completion_change_labels_not_status():
    run = fold([requested(), clustered(labeling=False)])
    assert run["status"] == "COMPLETED"
    run = apply(run, labeled())
    assert run["status"] == "COMPLETED" and run["centroids"][0]["label"] == "Cats"


def test_terminal_status_is_final_and_progress_never_goes_back():
    run = fold([requested(), status(TaskStatusEnum.PROCESSING, 0.6, 2),
                status(TaskStatusEnum.PROCESSING, 0.3, 3)])
    assert run["progress"] == 0.6
    run = apply(run, status(TaskStatusEnum.FAILED, None, 4, error="boom"))
    run = apply(run, status(TaskStatusEnum.PROCESSING, 0.9, 5))
    run = apply(run, clustered())
    assert run["status"] == "FAILED" and run["error_message"] == "boom"
    task = task_row(run)
    assert task["error"] == "boom" and task["additional_data"]["error"] == "boom" and task["outputs"] is None


def test_task_row_of_a_completed_run_has_outputs_and_ids():
    task = task_row(fold([requested(), clustered()]))
    assert task["task_type"] == "engine_cluster_build"
    assert task["outputs"] == [{"cluster_id": "clust_1", "run_id": "run_1", "num_clusters": 2, "num_points": 10,
                                "silhouette_score": 0.5}]
    assert task["additional_data"]["run_id"] == "run_1" and task["error"] is None


def test_what_auto_chose_and_why_reaches_the_tasks_additional_data():
    choice = {"pipeline": "kNN(15, cosine) + Leiden", "criterion": "Leiden objective", "scores": {"42": 1.5}}
    task = task_row(fold([requested(), clustered().model_copy(update={"method_choice": choice})]))
    assert task["additional_data"]["method_choice"] == choice
    assert "method_choice" not in task_row(fold([requested(), clustered()]))["additional_data"]


def test_an_inline_layouts_stability_outcome_reaches_the_run_and_its_task():
    run = fold([requested(), clustered().model_copy(update={
        "layout_stability_applied": LayoutStability.align,
        "layout_stability_reason": "aligned to run run_0 on 10 shared documents"})])
    assert run["details"]["layout_stability_applied"] == "aligned"
    assert run["details"]["layout_stability"] == "align"  # what was asked
    extra = task_row(run)["additional_data"]
    assert extra["layout_stability_applied"] == "aligned"
    assert extra["layout_stability_reason"] == "aligned to run run_0 on 10 shared documents"
    # no layout in the run (deferred): nothing applied yet
    assert "layout_stability_applied" not in task_row(fold([requested(), clustered()]))["additional_data"]


@pytest.mark.parametrize("labeling", [False, True])
def test_a_deferred_layouts_report_adds_its_outcome_and_changes_nothing_else(labeling):
    run = fold([requested(), clustered(labeling)])
    before = {k: run.get(k) for k in ("status", "stage", "progress", "completed_at")}
    report = RunStatusChanged(**IDS, status=TaskStatusEnum.COMPLETED, service="clusterer",
                              stage=DEFERRED_LAYOUT_STAGE, occurred_at=at(20),
                              details={"layout_stability_applied": "none", "layout_stability_reason": "fresh",
                                       "sampling": {"ignored": True}})
    after = apply(run, report)
    # a run still waiting for its labels is not completed by the layout's report
    assert {k: after.get(k) for k in before} == before
    assert after["status"] == ("PROCESSING" if labeling else "COMPLETED")
    assert after["details"]["layout_stability_applied"] == "none"
    assert after["details"]["layout_stability_reason"] == "fresh" and "sampling" not in after["details"]
    assert task_row(after)["additional_data"]["layout_stability_reason"] == "fresh"


def _prepared_report(version: int) -> RunStatusChanged:
    facts = {"sampling": SamplingInfo(matched=20, sampled=10, reason="sample_size 10"),
             "clustering_method": "kmeans", "labeling_enabled": True}
    if version == 1:  # the facts as `details` keys, as version 1 producers sent them
        wire = {**IDS, "schema_version": 1, "status": "PROCESSING", "service": "preparer", "stage": "prepared",
                "progress": 0.15, "occurred_at": at(2).isoformat(),
                "details": {**{k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in facts.items()},
                            "source_execution_ids": ["run_a"]}}
        return RunStatusChanged.model_validate(wire)
    return status(TaskStatusEnum.PROCESSING, 0.15, 2, stage="prepared", **facts,
                  details={"source_execution_ids": ["run_a"]})


def test_typed_status_facts_project_like_the_version_1_details_did():
    old, new = (fold([requested(), _prepared_report(v)]) for v in (1, 2))
    assert old == new
    assert new["sampling"] == {"matched": 20, "sampled": 10, "requested_sample_size": None, "cap": None,
                               "reason": "sample_size 10"}
    assert new["clustering_method"] == "kmeans" and new["labeling_enabled"] is True
    assert new["details"]["source_execution_ids"] == ["run_a"] and new["details"]["clustering_method"] == "kmeans"
    assert task_row(new)["additional_data"]["labeling_enabled"] is True


def test_a_typed_deferred_layout_report_projects_like_its_details():
    run = fold([requested(), clustered()])
    report = status(TaskStatusEnum.COMPLETED, None, 20, stage=DEFERRED_LAYOUT_STAGE,
                    layout_stability_applied=LayoutStabilityApplied.aligned, layout_stability_reason="kept")
    after = apply(run, report)
    assert after["details"]["layout_stability_applied"] == "aligned"
    assert after["details"]["layout_stability_reason"] == "kept"


def test_a_failed_runs_traceback_reaches_the_execution_not_the_task():
    run = fold([requested(), status(TaskStatusEnum.FAILED, None, 3, stage="failed", error="boom",
                                    error_traceback="Traceback ...\n  in handle\nValueError: boom\n")])
    assert run["status"] == "FAILED" and run["details"]["error_traceback"].endswith("ValueError: boom\n")
    task = task_row(run)
    assert task["error"] == "boom" and "error_traceback" not in task["additional_data"]


def test_per_centroid_statistics_reach_the_read_model_and_survive_labels():
    """The clusterer's cosine statistics ride CentroidSummary to the executions read
    model, keep through the labels' merge, and read back as the SDK's centroid; an
    event from before them still parses (null)."""
    from contracts.resources import ExecutionCentroid

    stats = {"mean_cosine_similarity": 0.95, "min_cosine_similarity": 0.8,
             "representative_ids": [{"document_id": "d7", "similarity": 0.99}, {"document_id": "d2"}]}
    event = clustered(labeling=True).model_copy(update={"centroids": [
        CentroidSummary(cluster_id="cl_0", num_members=6, **stats), CentroidSummary(cluster_id="cl_1", num_members=4)]})
    event = ExecutionClustered.model_validate_json(event.model_dump_json())  # as it crosses Kafka
    run = fold([requested(), event, labeled()])
    first = ExecutionCentroid.model_validate(run["centroids"][0])
    assert first.label == "Cats" and first.mean_cosine_similarity == 0.95 and first.min_cosine_similarity == 0.8
    assert [(r.document_id, r.similarity) for r in first.representative_ids] == [("d7", 0.99), ("d2", None)]
    second = ExecutionCentroid.model_validate(run["centroids"][1])
    assert (second.mean_cosine_similarity, second.representative_ids) == (None, None)
    old = CentroidSummary.model_validate({"cluster_id": "cl_3", "num_members": 2, "label": "x"})
    assert old.min_cosine_similarity is None and old.representative_ids is None
