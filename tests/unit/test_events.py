"""Event models: the envelope, JSON round trips, tolerance of unknown keys, and refusal of
versions they cannot read."""
from __future__ import annotations

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
    DeadLetter,
    ExecutionClustered,
    ExecutionRequested,
    ResultArtifacts,
    RunOptions,
    RunStatusChanged,
    SamplingInfo,
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
                       centroids=[CentroidSummary(cluster_id="cl_0", num_members=9),
                                  CentroidSummary(cluster_id="cl_-1", num_members=1)]),
    ClustersLabeled(**IDS, labels=[ClusterLabel(cluster_id="cl_0", label="Cats", keywords=["cat"])],
                    llm_labeling_errors=[{"cluster_id": "cl_1", "error": "bad json"}]),
    RunStatusChanged(**IDS, status=TaskStatusEnum.PROCESSING, service="clusterer", stage="clustering",
                     progress=0.3, details={"sampling": {"matched": 1}}),
]


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
    assert data["schema_version"] == (2 if isinstance(event, RunStatusChanged) else 1)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_unknown_fields_from_a_newer_producer_are_ignored(event):
    wire = event.model_dump(mode="json")
    parsed = type(event).model_validate({**wire, "surprise": 1})
    assert parsed == event and "surprise" not in parsed.model_dump()


def test_unknown_versions_and_garbage_are_refused():
    wire = EXAMPLES[0].model_dump(mode="json")
    with pytest.raises(pydantic.ValidationError, match="schema_version"):
        ExecutionRequested.model_validate({**wire, "schema_version": 2})
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
