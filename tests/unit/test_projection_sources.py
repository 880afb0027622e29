"""The read model of assign, composite and lineage-carrying runs (the projector's reducer)."""
from __future__ import annotations

from datetime import datetime, timezone

from contracts.api import ExecutionMode
from contracts.events import (
    CentroidSummary,
    ClusterLabel,
    ClusteringConfig,
    ClustersLabeled,
    ExecutionClustered,
    ExecutionRequested,
    Lineage,
    LineageEvent,
    ResultArtifacts,
    RunOptions,
    SourceClusterGroup,
)
from services.status.projection import apply, task_row

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
IDS = dict(namespace="ns", run_id="run_2", cluster_id="clust_1", task_id="task_2", occurred_at=T0)


def clustered(mode: ExecutionMode = ExecutionMode.full, **extra) -> ExecutionClustered:
    return ExecutionClustered(
        **IDS, artifacts=ResultArtifacts(members_key="m", centroids_key="c"), num_clusters=2, num_points=10,
        centroids=[CentroidSummary(cluster_id="cl_0", num_members=6, label="Kept", keywords=["old"],
                                   stable_id="sc_a"),
                   CentroidSummary(cluster_id="cl_1", num_members=4, stable_id="sc_b")],
        config=ClusteringConfig(mode=mode, clustering_method="kmeans", embedding_name="text"), **extra)


def labeled() -> ClustersLabeled:
    return ClustersLabeled(**IDS, labels=[ClusterLabel(cluster_id="cl_0", label="Fresh", keywords=["new"]),
                                          ClusterLabel(cluster_id="cl_1", label="Dogs", keywords=["dog"])])


def test_inherited_labels_are_kept_and_the_rest_filled():
    for events in ([clustered(), labeled()], [labeled(), clustered()]):
        run = None
        for e in events:
            run = apply(run, e)
        assert [(c["label"], c["keywords"], c["stable_id"]) for c in run["centroids"]] == [
            ("Kept", ["old"], "sc_a"), ("Dogs", ["dog"], "sc_b")]
        assert [label["label"] for label in run["labels"]] == ["Fresh", "Dogs"]  # all kept in `labels`


def test_assign_run_names_its_source_from_the_request_on():
    request = ExecutionRequested(**IDS, options=RunOptions(mode=ExecutionMode.assign),
                                 source_run_id="run_1")
    run = apply(None, request)
    assert run["mode"] == "assign" and run["source_run_id"] == "run_1"
    assert task_row(run)["additional_data"]["source_run_id"] == "run_1"
    run = apply(run, clustered(ExecutionMode.assign, source_run_id="run_1"))
    task = task_row(run)
    assert run["status"] == "COMPLETED" and task["additional_data"]["mode"] == "assign"
    assert task["additional_data"]["source_run_id"] == "run_1"


def test_composite_run_records_its_sources_and_groups():
    request = ExecutionRequested(**IDS, options=RunOptions(
        mode=ExecutionMode.composite, source_execution_ids=["run_a", "run_b", "run_a"]))
    run = apply(None, request)
    assert run["source_execution_ids"] == ["run_a", "run_b"]
    group = SourceClusterGroup(source_run_id="run_a", source_cluster_id="cl_3", num_members=5, cluster_id="cl_0",
                               similarity=0.97)
    run = apply(run, clustered(ExecutionMode.composite, source_execution_ids=["run_a", "run_b"],
                               source_clusters=[group]))
    assert run["mode"] == "composite" and run["source_clusters"][0]["source_cluster_id"] == "cl_3"
    assert task_row(run)["additional_data"]["source_execution_ids"] == ["run_a", "run_b"]


def test_lineage_is_stored_and_counted_on_the_task():
    lineage = Lineage(previous_run_id="run_1", basis="members", shared_documents=10, events=[
        LineageEvent(kind="continued", previous_cluster_ids=["cl_0"], previous_stable_ids=["sc_a"],
                     current_cluster_ids=["cl_0"], current_stable_ids=["sc_a"], similarity=1.0),
        LineageEvent(kind="new", current_cluster_ids=["cl_1"], current_stable_ids=["sc_b"]),
    ])
    run = apply(None, clustered(lineage=lineage))
    assert run["lineage"]["events"][1]["kind"] == "new"
    counts = task_row(run)["additional_data"]["lineage"]
    assert counts == {"previous_run_id": "run_1", "continued": 1, "split": 0, "merged": 0, "new": 1,
                      "dissolved": 0}
