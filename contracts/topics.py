"""The topic registry: every topic's name, key, producers and consumers, in one place.

Services subscribe through `Topic` objects from here, never through string literals;
`tests/unit/test_topics.py` checks that what the services actually subscribe to and
publish matches this table.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from contracts.events import (
    ClustersLabeled,
    ComputeLayout,
    DatasetPrepared,
    DeadLetter,
    ExecutionClustered,
    ExecutionRequested,
    ImportRequested,
    RunStatusChanged,
)

# Consumer group ids, one per service: scaling a service means more members of its group.
# Every one starts with GROUP_PREFIX; a deployment's topic prefix goes before it
# (`clusterflow.messaging.kafka_group`), so that two stacks sharing one Kafka with
# different topic prefixes never share a group.
GROUP_PREFIX = "clusterflow-"
GATEWAY = "clusterflow-gateway"
PREPARER = "clusterflow-preparer"
CLUSTERER = "clusterflow-clusterer"
LABELER = "clusterflow-labeler"
STATUS = "clusterflow-status"
ANYONE = "anyone"  # external publishers (ExecutionRequested may come from outside)


@dataclass(frozen=True)
class Topic:
    name: str
    event: type[BaseModel]
    key: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    partitions: int = 3


EXECUTION_REQUESTED = Topic(
    name="clustering.execution.requested",
    event=ExecutionRequested,
    key="cluster_id",
    producers=(GATEWAY, ANYONE),
    consumers=(PREPARER, STATUS),
)
IMPORT_REQUESTED = Topic(
    name="clustering.import.requested",
    event=ImportRequested,
    key="cluster_id",  # the collection's id
    producers=(GATEWAY, ANYONE),
    consumers=(PREPARER, STATUS),
)
DATASET_PREPARED = Topic(
    name="clustering.dataset.prepared",
    event=DatasetPrepared,
    key="cluster_id",
    producers=(PREPARER,),
    consumers=(CLUSTERER,),
)
EXECUTION_CLUSTERED = Topic(
    name="clustering.execution.clustered",
    event=ExecutionClustered,
    key="cluster_id",
    producers=(CLUSTERER,),
    consumers=(LABELER, STATUS),
)
EXECUTION_LABELED = Topic(
    name="clustering.execution.labeled",
    event=ClustersLabeled,
    key="cluster_id",
    producers=(LABELER,),
    consumers=(STATUS,),
)
STATUS_CHANGED = Topic(
    name="clustering.status",
    event=RunStatusChanged,
    key="cluster_id",
    # The status service's watchdog reports stalled runs as FAILED here too, so that the
    # projector stays the only writer of the read models.
    producers=(GATEWAY, PREPARER, CLUSTERER, LABELER, STATUS),
    consumers=(STATUS,),
)
# A command (deferred layouts): the gateway asks, the clusterer computes.
LAYOUT_COMPUTE = Topic(
    name="clustering.layout.compute",
    event=ComputeLayout,
    key="cluster_id",
    producers=(GATEWAY,),
    consumers=(CLUSTERER,),
)
DEAD_LETTERS = Topic(
    name="clustering.dlq",
    event=DeadLetter,
    key="source_topic",
    producers=(PREPARER, CLUSTERER, LABELER, STATUS),
    consumers=(),
    partitions=1,
)

ALL_TOPICS: tuple[Topic, ...] = (
    EXECUTION_REQUESTED,
    IMPORT_REQUESTED,
    DATASET_PREPARED,
    EXECUTION_CLUSTERED,
    EXECUTION_LABELED,
    STATUS_CHANGED,
    LAYOUT_COMPUTE,
    DEAD_LETTERS,
)


def consumed_by(group: str) -> tuple[Topic, ...]:
    return tuple(t for t in ALL_TOPICS if group in t.consumers)
