"""Event models: the envelope, JSON round trips, tolerance of unknown keys, and refusal of
versions they cannot read."""
from __future__ import annotations

import json

import pydantic
import pytest

from contracts.api import LLMLabeling, LogicalOperator, TaskStatusEnum
from contracts.events import (
    CentroidSummary,
    ClusterLabel,
    ClusteringConfig,
    ClusterMetrics,
    ClustersLabeled,
    DatasetPrepared,
    GROUP_SCHEMA_VERSION,
    DeadLetter,
    ExecutionClustered,
    ExecutionRequested,
    Lineage,
    LineageEvent,
    ResultArtifacts,
    RunOptions,
    RunStatusChanged,
    SamplingInfo,
    SourceClusterGroup,
    SourceRun,
    derived_event_id,
)

IDS = dict(namespace="ns", run_id="run_1", cluster_id="clust_1", task_id="task_1")
CONFIG = ClusteringConfig(clustering_method="hdbscan", algorithm_params={"min_cluster_size": 10},
                          embedding_name="text", vis_n_components=3,
                          llm_labeling=LLMLabeling(enabled=True, model_name="gpt-4o-mini-2024-07-18"))

EXAMPLES = [
    ExecutionRequested(**IDS, options=RunOptions(
        sample_size=1000, filters=LogicalOperator.model_validate({"OR": [{"a.b": 1}, {"field": "c", "value": "x"}]}))),
    DatasetPrepared(**IDS, manifest_key="ns/clust_1/run_1/manifest.parquet", num_points=10, dimension=384,
                    config=CONFIG, sampling=SamplingInfo(matched=20, sampled=10, requested_sample_size=10)),
    ExecutionClustered(**IDS, artifacts=ResultArtifacts(members_key="m", centroids_key="c", coords_key="x"),
                       num_clusters=2, num_points=10, noise_count=1, config=CONFIG,
                       metrics=ClusterMetrics(silhouette_score=0.4, davies_bouldin_index=0.9),
                       centroids=[CentroidSummary(group_id="cl_0", num_members=9),
                                  CentroidSummary(group_id="cl_-1", num_members=1)]),
    ClustersLabeled(**IDS, labels=[ClusterLabel(group_id="cl_0", label="Cats", keywords=["cat"])],
                    llm_labeling_errors=[{"cluster_id": "cl_1", "error": "bad json"}]),
    RunStatusChanged(**IDS, status=TaskStatusEnum.PROCESSING, service="clusterer", stage="clustering",
                     progress=0.3, details={"sampling": {"matched": 1}}),
]


# The events whose groups of points became `group_id` (and composite sources
# `source_run_ids`) in schema version 2 (docs/vocabulary.md).
GROUP_EVENTS = (ExecutionRequested, DatasetPrepared, ExecutionClustered, ClustersLabeled)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_through_json(event):
    wire = event.model_dump_json()
    assert type(event).model_validate_json(wire) == event
    assert type(event).model_validate_json(wire).model_dump_json() == wire


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_carries_the_envelope(event):
    data = event.model_dump()
    for field in ("event_id", "schema_version", "namespace", "run_id", "cluster_id", "task_id", "occurred_at"):
        assert data[field] is not None
    assert data["schema_version"] == (2 if isinstance(event, (RunStatusChanged, *GROUP_EVENTS)) else 1)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_unknown_fields_from_a_newer_producer_are_ignored(event):
    wire = event.model_dump(mode="json")
    parsed = type(event).model_validate({**wire, "surprise": 1})
    assert parsed == event and "surprise" not in parsed.model_dump()


def test_unknown_versions_and_garbage_are_refused():
    wire = EXAMPLES[0].model_dump(mode="json")
    with pytest.raises(pydantic.ValidationError, match="schema_version"):
        ExecutionRequested.model_validate({**wire, "schema_version": 3})
    status = EXAMPLES[-1].model_dump(mode="json")
    with pytest.raises(pydantic.ValidationError, match="schema_version"):
        RunStatusChanged.model_validate({**status, "schema_version": 3})
    with pytest.raises(pydantic.ValidationError):
        ExecutionRequested.model_validate_json(b"\x00garbage")


def test_a_version_1_status_event_still_parses():
    wire = EXAMPLES[-1].model_dump(mode="json")
    old = RunStatusChanged.model_validate({**wire, "schema_version": 1})
    assert old.schema_version == 1 and old.details == {"sampling": {"matched": 1}}


def test_a_minimal_external_request_needs_only_ids():
    event = ExecutionRequested.model_validate({"run_id": "r", "cluster_id": "c", "task_id": "t"})
    assert event.namespace == "default" and event.options.mode.value == "full"


def test_derived_event_ids_are_deterministic_and_distinct():
    assert derived_event_id("run_1", "prepared") == derived_event_id("run_1", "prepared")
    assert derived_event_id("run_1", "prepared") != derived_event_id("run_2", "prepared")
    assert derived_event_id("run_1", "a", "b") != derived_event_id("run_1", "ab")


def test_dead_letter_keeps_the_original_bytes():
    letter = DeadLetter(source_topic="t", consumer_group="g", reason="r", error_type="E", original_value_b64="AAE=")
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


# Version 1's names of the fields version 2 renamed (docs/vocabulary.md).
VERSION_1_NAMES = {"group_id": "cluster_id", "parent_group_id": "parent_cluster_id",
                   "child_group_ids": "child_cluster_ids", "source_group_id": "source_cluster_id",
                   "previous_group_ids": "previous_cluster_ids", "current_group_ids": "current_cluster_ids",
                   "source_run_ids": "source_execution_ids"}


def as_version_1(value):
    """An event's JSON as a version 1 producer wrote it: the old key names, version 1."""
    if isinstance(value, list):
        return [as_version_1(v) for v in value]
    if not isinstance(value, dict):
        return value
    renamed = {VERSION_1_NAMES.get(k, k): as_version_1(v) for k, v in value.items()}
    if "schema_version" in renamed:
        renamed["schema_version"] = 1
    return renamed


def _summary(group: str, **fields) -> CentroidSummary:
    return CentroidSummary(group_id=group, num_members=3, **fields)


GROUPED = ExecutionClustered(
    **IDS, artifacts=ResultArtifacts(members_key="m", centroids_key="c"), num_clusters=2, num_points=6,
    config=CONFIG, source_run_id="run_0", source_run_ids=["run_a", "run_b"],
    centroids=[_summary("cl_0", parent_group_id="cl_2", hierarchy_level=1),
               _summary("cl_1", parent_group_id="cl_2", hierarchy_level=1),
               _summary("cl_2", child_group_ids=["cl_0", "cl_1"], hierarchy_level=0)],
    lineage=Lineage(previous_run_id="run_0", events=[LineageEvent(
        kind="split", previous_group_ids=["cl_4"], previous_stable_ids=["sc_a"],
        current_group_ids=["cl_0", "cl_1"], current_stable_ids=["sc_a", "sc_b"], similarity=0.9)]),
    source_clusters=[SourceClusterGroup(source_run_id="run_a", source_group_id="cl_3", num_members=3,
                                        group_id="cl_0", similarity=0.8)])


def test_the_group_events_are_version_2_and_name_groups_group_id():
    wire = GROUPED.model_dump_json()
    assert GROUPED.schema_version == GROUP_SCHEMA_VERSION == 2
    for old in VERSION_1_NAMES.values():
        if old != "cluster_id":
            assert f'"{old}"' not in wire, old
    assert wire.count('"cluster_id"') == 1  # the envelope's: the cluster definition
    assert ExecutionClustered.model_validate_json(wire) == GROUPED


def test_a_version_1_execution_clustered_reads_into_the_version_2_model():
    old = as_version_1(GROUPED.model_dump(mode="json"))
    assert old["centroids"][2]["child_cluster_ids"] == ["cl_0", "cl_1"]  # the old shape, indeed
    parsed = ExecutionClustered.model_validate_json(json.dumps(old))
    assert parsed.schema_version == 1
    assert parsed.model_copy(update={"schema_version": 2}) == GROUPED
    assert parsed.centroids[0].parent_group_id == "cl_2" and parsed.centroids[2].child_group_ids == ["cl_0", "cl_1"]
    assert parsed.lineage.events[0].previous_group_ids == ["cl_4"]
    assert parsed.source_clusters[0].source_group_id == "cl_3" and parsed.source_clusters[0].group_id == "cl_0"
    assert parsed.source_run_ids == ["run_a", "run_b"]
    # and it is written again under the new names
    assert '"child_group_ids"' in parsed.model_dump_json() and '"child_cluster_ids"' not in parsed.model_dump_json()


def test_a_version_1_labels_event_and_request_and_dataset_read_into_the_new_models():
    labeled = ClustersLabeled(**IDS, labels=[ClusterLabel(group_id="cl_0", label="Cats")])
    old = as_version_1(labeled.model_dump(mode="json"))
    assert old["labels"][0]["cluster_id"] == "cl_0"
    assert ClustersLabeled.model_validate(old).labels[0].group_id == "cl_0"

    request = ExecutionRequested(**IDS, options=RunOptions(mode="composite", source_run_ids=["run_a", "run_b"]))
    old = as_version_1(request.model_dump(mode="json"))
    assert old["options"]["source_execution_ids"] == ["run_a", "run_b"]
    assert ExecutionRequested.model_validate(old).options.source_run_ids == ["run_a", "run_b"]

    source = SourceRun(run_id="run_a", cluster_id="clust_1", members_key="m", centroids_key="c",
                       centroids=[_summary("cl_5", stable_id="sc_x")])
    prepared = DatasetPrepared(**IDS, manifest_key="k", num_points=1, dimension=2, config=CONFIG,
                               sampling=SamplingInfo(matched=1, sampled=1), sources=[source], previous=source)
    old = as_version_1(prepared.model_dump(mode="json"))
    parsed = DatasetPrepared.model_validate(old)
    assert parsed.schema_version == 1
    assert parsed.sources[0].centroids[0].group_id == "cl_5" and parsed.previous.centroids[0].stable_id == "sc_x"
    assert parsed.model_copy(update={"schema_version": 2}) == prepared


def test_a_version_1_event_with_both_names_reads_the_new_one():
    # a producer that wrote both during the upgrade: the new name wins
    summary = CentroidSummary.model_validate({"group_id": "cl_1", "cluster_id": "cl_9", "num_members": 1})
    assert summary.group_id == "cl_1"
