"""Events that do not parse land on the dead-letter topic, with the reason and the
original bytes, once per consumer group that read them; the consumers go on."""
from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from clusterflow.messaging import kafka_group
from contracts.api import TaskStatusEnum
from contracts.events import (
    ClusteringConfig,
    ClustersLabeled,
    DatasetPrepared,
    DeadLetter,
    ExecutionClustered,
    ExecutionRequested,
    ResultArtifacts,
    RunStatusChanged,
    SamplingInfo,
)
from contracts.topics import (
    DATASET_PREPARED,
    DEAD_LETTERS,
    EXECUTION_CLUSTERED,
    EXECUTION_LABELED,
    EXECUTION_REQUESTED,
    STATUS_CHANGED,
)
from tests.e2e.conftest import wait_for_task
from tests.support.corpus import make_cluster, make_collection, start_run
from tests.support.kafka import publish_raw, read_topic

pytestmark = pytest.mark.e2e

CONSUMED = (EXECUTION_REQUESTED, DATASET_PREPARED, EXECUTION_CLUSTERED, EXECUTION_LABELED, STATUS_CHANGED)


def valid_event(topic, marker: str):
    """A well-formed event of the topic's type, for a run that does not exist."""
    ids = dict(namespace="e2e", run_id=f"run_dlq_{marker}", cluster_id=f"clust_dlq_{marker}",
               task_id=f"task_dlq_{marker}")
    config = ClusteringConfig(clustering_method="kmeans", embedding_name="v")
    return {
        EXECUTION_REQUESTED.name: lambda: ExecutionRequested(**ids),
        DATASET_PREPARED.name: lambda: DatasetPrepared(**ids, manifest_key="k", num_points=1, dimension=1,
                                                       config=config, sampling=SamplingInfo(matched=1, sampled=1)),
        EXECUTION_CLUSTERED.name: lambda: ExecutionClustered(**ids, artifacts=ResultArtifacts(
            members_key="m", centroids_key="c"), num_clusters=1, num_points=1, config=config),
        EXECUTION_LABELED.name: lambda: ClustersLabeled(**ids, labels=[]),
        STATUS_CHANGED.name: lambda: RunStatusChanged(**ids, status=TaskStatusEnum.PROCESSING, service="nobody"),
    }[topic.name]()


def bad_records(topic, marker: str) -> dict[str, bytes]:
    future = json.loads(valid_event(topic, marker).model_dump_json())
    future["schema_version"] = future["schema_version"] + 1  # one its consumers do not know yet
    return {
        "garbage": b"\x00\xff\xfe not json at all " + marker.encode(),
        "wrong shape": json.dumps({"hello": "world", "marker": marker}).encode(),
        "unknown schema_version": json.dumps(future).encode(),
    }


def test_unparseable_events_are_dead_lettered_and_the_consumers_go_on(api, stack, settings):
    marker = uuid.uuid4().hex[:8]
    sent: dict[tuple[str, bytes], str] = {}
    for topic in CONSUMED:
        records = bad_records(topic, marker)
        publish_raw(settings, topic.name, [(b"dlq-test", value) for value in records.values()])
        sent.update({(topic.name, value): kind for kind, value in records.items()})

    # Each consumer group that reads a topic dead-letters each bad record once.
    expected = {(topic.name, kafka_group(settings, group), value) for topic in CONSUMED for group in topic.consumers
                for (name, value) in sent if name == topic.name}
    deadline = time.monotonic() + 90
    found: dict[tuple[str, str, bytes], DeadLetter] = {}
    while time.monotonic() < deadline and set(found) < expected:
        for record in read_topic(settings, DEAD_LETTERS.name):
            letter = DeadLetter.model_validate_json(record.value)
            original = base64.b64decode(letter.original_value_b64)
            if (letter.source_topic, original) in sent:
                key = (letter.source_topic, letter.consumer_group, original)
                assert key not in found or found[key].offset == letter.offset, f"dead-lettered twice: {key}"
                found[key] = letter
        time.sleep(1)
    missing = [(t, g, sent[(t, v)]) for t, g, v in expected - set(found)]
    assert not missing, f"not dead-lettered: {missing}\n{stack.log_tails()}"
    assert len(found) == len(expected) == 3 * 7  # 5 topics, 7 (topic, group) pairs

    for (topic_name, group, original), letter in found.items():
        assert letter.reason.startswith("event does not parse as"), letter.reason
        assert letter.partition is not None and letter.offset is not None
        assert letter.error_type == "ValidationError"
        if sent[(topic_name, original)] == "unknown schema_version":
            assert "schema_version" in letter.reason

    # None of them became a run, and a valid run after them completes.
    assert api.get(f"/v1/tasks/task_dlq_{marker}").status_code == 404
    collection_id = make_collection(api, per_group=20, seed=31)
    cluster_id = make_cluster(api, collection_id, defer_visualization=True)
    done = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
