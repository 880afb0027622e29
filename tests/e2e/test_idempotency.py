"""Every consumer is idempotent: each event delivered twice, and a whole consumer group
replayed from offset 0, leave one execution, one set of results and one task history
(one `run_events` row per status event id), with every status unchanged."""
from __future__ import annotations

import json
import signal

import pytest
from minio import Minio

from contracts.topics import (
    ALL_TOPICS,
    DATASET_PREPARED,
    EXECUTION_CLUSTERED,
    EXECUTION_LABELED,
    EXECUTION_REQUESTED,
    STATUS,
    STATUS_CHANGED,
)
from tests.e2e.conftest import wait_for_task
from tests.support.corpus import make_cluster, make_collection, start_run
from tests.support.kafka import publish_raw, read_topic, rewind_group, snapshot, wait_consumed

pytestmark = pytest.mark.e2e

EVENT_TOPICS = (EXECUTION_REQUESTED, DATASET_PREPARED, EXECUTION_CLUSTERED, EXECUTION_LABELED, STATUS_CHANGED)


def every_group(settings) -> dict[str, list[str]]:
    """Each consumer group with the topics it reads (the topic registry)."""
    groups: dict[str, list[str]] = {}
    for topic in ALL_TOPICS:
        for group in topic.consumers:
            groups.setdefault(group, []).append(topic.name)
    return groups


def objects(settings, prefix: str) -> dict[str, tuple[str, object]]:
    client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                   secure=settings.s3_secure, region=settings.s3_region)
    return {o.object_name: (o.etag, o.last_modified)
            for o in client.list_objects(settings.s3_bucket, prefix=prefix, recursive=True)}


def records_of(settings, run_id: str) -> dict[str, list]:
    out = {}
    for topic in EVENT_TOPICS:
        out[topic.name] = [r for r in read_topic(settings, topic.name)
                           if _run_of(r.value) == run_id]
    return out


def _run_of(value: bytes) -> str | None:
    try:
        return json.loads(value).get("run_id")
    except (ValueError, AttributeError):
        return None


@pytest.fixture(scope="module")
def finished_run(api, stack, settings):
    collection_id = make_collection(api, per_group=40, seed=21)
    cluster_id = make_cluster(api, collection_id, "kmeans", {"n_clusters": 4}, vis_n_components=2)
    task = start_run(api, cluster_id)
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    # The labeler's offline labels arrive after completion: let every group catch up.
    wait_consumed(settings, every_group(settings))
    return cluster_id, done["additional_data"]["run_id"], task["task_id"]


def test_every_event_delivered_twice_is_applied_once(api, stack, settings, finished_run):
    cluster_id, run_id, task_id = finished_run
    before = snapshot(settings, [run_id])
    artifacts_before = objects(settings, f"e2e/{cluster_id}/{run_id}/")
    assert {k.rsplit("/", 1)[1] for k in artifacts_before} == {"manifest.parquet", "members.parquet",
                                                              "centroids.parquet", "coords.parquet"}
    seen = records_of(settings, run_id)
    assert all(seen[t.name] for t in EVENT_TOPICS), {k: len(v) for k, v in seen.items()}

    # Deliver every event of the run a second time, verbatim (same key, same bytes).
    for topic in EVENT_TOPICS:
        publish_raw(settings, topic.name, [(r.key, r.value) for r in seen[topic.name]])
    wait_consumed(settings, every_group(settings))

    after = snapshot(settings, [run_id])
    assert after == before
    assert objects(settings, f"e2e/{cluster_id}/{run_id}/") == artifacts_before
    assert len(after["executions"]) == 1 and len(after["tasks"]) == 1
    status_ids = {json.loads(r.value)["event_id"] for r in seen[STATUS_CHANGED.name]}
    assert {e["event_id"] for e in after["run_events"]} == status_ids
    assert len(after["run_events"]) == len(status_ids)
    assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "COMPLETED"
    twice = records_of(settings, run_id)
    assert all(len(twice[t.name]) == 2 * len(seen[t.name]) for t in EVENT_TOPICS)


def test_replaying_the_projector_from_offset_0_changes_nothing(api, stack, settings, finished_run):
    """A consumer-group reset: the status projector reads all its topics again from the
    first record (every run of this session so far) against the same database."""
    wait_consumed(settings, every_group(settings))
    before = snapshot(settings)
    status_topics = every_group(settings)[STATUS]
    stack.kill("services.status", signal.SIGTERM)  # a clean leave: the group is empty at once
    try:
        rewind_group(settings, STATUS, status_topics)
    finally:
        stack.spawn("services.status")
    replayed = sum(len(read_topic(settings, name)) for name in status_topics)
    wait_consumed(settings, {STATUS: status_topics}, timeout=180)
    after = snapshot(settings)
    assert after == before, "the replay changed the read model"
    assert replayed >= len(before["run_events"]) > 0
    _, run_id, task_id = finished_run
    assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "COMPLETED"
