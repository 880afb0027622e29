"""The Consumer's rules for transient failures: retried with exponential backoff, and
bounded: past `max_attempts` the event is dead-lettered and its run ends FAILED.
(The e2e fault tests prove the same against real outages: tests/e2e/test_faults.py.)"""
from __future__ import annotations

import base64

import pytest

from clusterflow import messaging
from clusterflow.messaging import Consumer, RunFailed
from clusterflow.settings import Settings
from contracts.api import TaskStatusEnum
from contracts.events import DeadLetter, ExecutionRequested, RunStatusChanged
from contracts.topics import EXECUTION_REQUESTED
from tests.fakes import RecordingPublisher


@pytest.fixture
def sleeps(monkeypatch):
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(messaging.asyncio, "sleep", fake_sleep)
    return waited


def consumer(handler, publisher, **settings) -> Consumer:
    return Consumer(topic=EXECUTION_REQUESTED, group_id="g", service="svc", handler=handler, publisher=publisher,
                    settings=Settings(**settings))


EVENT = ExecutionRequested(namespace="ns", run_id="run_1", cluster_id="clust_1", task_id="task_1")
BODY = EVENT.model_dump_json().encode()


async def test_a_transient_failure_is_retried_with_backoff_until_it_passes(sleeps):
    calls = []

    async def flaky(event) -> None:
        calls.append(event)
        if len(calls) < 4:
            raise ConnectionRefusedError("S3 is away")

    out = RecordingPublisher()
    await consumer(flaky, out, max_attempts=8, retry_backoff_s=0.5).process(BODY, partition=0, offset=7)
    assert len(calls) == 4 and calls[0] == EVENT
    assert sleeps == [0.5, 1.0, 2.0]
    assert out.published == []  # no dead letter, no FAILED


async def test_retries_are_bounded_then_dead_lettered_and_the_run_failed(sleeps):
    calls = []

    async def broken(event) -> None:
        calls.append(event)
        raise OSError("Postgres is away")

    out = RecordingPublisher()
    await consumer(broken, out, max_attempts=5, retry_backoff_s=1.0, retry_backoff_max_s=3.0).process(
        BODY, partition=2, offset=11)
    assert len(calls) == 5
    assert sleeps == [1.0, 2.0, 3.0, 3.0]  # doubled, capped
    [letter] = out.of(DeadLetter)
    assert letter.reason.startswith("failed after 5 attempts") and "Postgres is away" in letter.reason
    assert base64.b64decode(letter.original_value_b64) == BODY
    assert (letter.partition, letter.offset, letter.consumer_group) == (2, 11, "g")
    [failed] = out.of(RunStatusChanged)
    assert failed.status is TaskStatusEnum.FAILED and failed.run_id == "run_1" and "Postgres is away" in failed.error


async def test_a_run_failure_is_not_retried(sleeps):
    async def refuses(event) -> None:
        raise RunFailed("no documents match")

    out = RecordingPublisher()
    await consumer(refuses, out).process(BODY)
    assert sleeps == [] and out.of(DeadLetter) == []
    assert out.of(RunStatusChanged)[0].error == "no documents match"


def test_the_default_bound_outlasts_a_server_restart_or_a_short_outage():
    s = Settings()
    waits, delay = [], s.retry_backoff_s
    for _ in range(s.max_attempts - 1):
        waits.append(delay)
        delay = min(delay * 2, s.retry_backoff_max_s)
    # Between the first and the last attempt: over a minute (an S3 outage of 10 s, a
    # Postgres or Kafka restart of a few seconds), and bounded (nothing retries forever).
    assert 60 <= sum(waits) <= 120
