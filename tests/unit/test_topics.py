"""The topic registry matches what the services actually subscribe to and publish."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from contracts import topics as registry
from contracts.topics import ALL_TOPICS, consumed_by

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "preparer": registry.PREPARER,
    "clusterer": registry.CLUSTERER,
    "labeler": registry.LABELER,
    "status": registry.STATUS,
}
CONSTANTS = {t.name: name for name, t in vars(registry).items() if isinstance(t, registry.Topic)}


def _bootstrap(service: str):
    module = __import__(f"services.{service}.app", fromlist=["bootstrap"])
    return module.bootstrap()


@pytest.mark.parametrize("service,group", SERVICES.items())
def test_each_service_subscribes_to_exactly_its_registered_topics_in_its_group(service, group):
    broker = _bootstrap(service).broker
    subscribed = {(t.name if hasattr(t, "name") else t, s.group_id) for s in broker.subscribers for t in s.topics}
    expected = {(t.name, group) for t in consumed_by(group)}
    assert subscribed == expected


def _published_by(service: str) -> set[str]:
    """Topic constants a service's code hands to `publish` (directly or via report_status)."""
    found = set()
    for path in (ROOT / "services" / service).rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r"publish\(\s*([A-Z_]+)\s*,", text))
        if "report_status(" in text:
            found.add("STATUS_CHANGED")
    return found


@pytest.mark.parametrize("service,group", [*SERVICES.items(), ("gateway", registry.GATEWAY)])
def test_each_service_publishes_only_to_topics_it_is_registered_for(service, group):
    allowed = {CONSTANTS[t.name] for t in ALL_TOPICS if group in t.producers}
    published = _published_by(service)
    assert published <= allowed, f"{service} publishes to {published - allowed} without being registered"


def test_every_consumed_topic_has_a_producer_and_names_are_unique():
    assert len({t.name for t in ALL_TOPICS}) == len(ALL_TOPICS)
    for topic in ALL_TOPICS:
        assert topic.producers, topic.name
        assert topic.name.startswith("clustering.")


def test_every_group_has_the_one_prefix_and_a_deployment_prefix_goes_before_it():
    groups = {g for t in ALL_TOPICS for g in (*t.consumers, *t.producers) if g != registry.ANYONE}
    assert groups and all(g.startswith(registry.GROUP_PREFIX) for g in groups), groups
    from clusterflow.messaging import kafka_group
    from clusterflow.settings import Settings

    assert kafka_group(Settings(topic_prefix="ci7."), registry.STATUS) == "ci7.clusterflow-status"
    broker = _bootstrap("status").broker
    assert {s.group_id for s in broker.subscribers} == {registry.STATUS}  # no prefix set here
