"""Kafka wiring shared by the services: broker, publisher, topic creation, and the
consumer wrapper that makes every handler safe to run at least once.

The wrapper's rules, the same for every consumer:
- an event that does not parse goes to the dead-letter topic with the reason and the
  original bytes; the consumer goes on;
- `RunFailed` from a handler ends the run as FAILED with its message (a user error,
  not a broken event);
- any other exception is treated as transient and retried with exponential backoff;
  past `max_attempts` the event is dead-lettered and its run marked FAILED, so nothing
  stays PENDING forever;
- a run failed either way carries the exception's traceback (its last frames,
  `short_traceback`) on the FAILED report, for the execution's `error_traceback`;
- the offset is committed only after the handler (and what it published) finished.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel, ValidationError

from clusterflow.observability import EVENTS, HANDLER_SECONDS, PUBLISHED
from clusterflow.runstate import RunCanceled
from clusterflow.settings import Settings
from contracts.api import TaskStatusEnum
from contracts.events import TRACEBACK_MAX_CHARS, DeadLetter, Event, RunStatusChanged, derived_event_id
from contracts.topics import ALL_TOPICS, DEAD_LETTERS, STATUS_CHANGED, Topic

log = logging.getLogger("clusterflow.messaging")

E = TypeVar("E", bound=Event)


class RunFailed(Exception):
    """The run cannot succeed (bad parameters, no documents...): report, do not retry."""


class Publisher(Protocol):
    async def publish(self, topic: Topic, event: BaseModel, key: str | None = None) -> None: ...


class KafkaPublisher:
    def __init__(self, broker: KafkaBroker, prefix: str = "") -> None:
        self.broker = broker
        self.prefix = prefix

    async def publish(self, topic: Topic, event: BaseModel, key: str | None = None) -> None:
        if not isinstance(event, topic.event):
            raise TypeError(f"{type(event).__name__} does not belong on {topic.name}")
        key = key if key is not None else str(getattr(event, topic.key))
        await self.broker.publish(
            event.model_dump_json().encode(),
            topic=self.prefix + topic.name,
            key=key.encode(),
            headers={"event_type": getattr(event, "event_type", type(event).__name__)},
        )
        PUBLISHED.labels(topic.name).inc()


def make_broker(settings: Settings, client_id: str) -> KafkaBroker:
    # acks=all + idempotence: a publish that returned is durable and not duplicated
    # by the producer's own retries.
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=30_000,
        graceful_timeout=30.0,
    )


async def ensure_topics(bootstrap: str, topics: tuple[Topic, ...] = ALL_TOPICS, prefix: str = "") -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name=prefix + t.name, num_partitions=t.partitions, replication_factor=1)
            for t in topics
            if prefix + t.name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another service created it meanwhile
    finally:
        await admin.close()


_CUT = "... (earlier frames cut)\n"


def short_traceback(exc: BaseException, limit: int = TRACEBACK_MAX_CHARS) -> str:
    """The exception's traceback (its causes included) in at most `limit` characters:
    the end of it, where the failing frames and the message are, cut at a line."""
    text = "".join(traceback.format_exception(exc))
    if len(text) <= limit:
        return text
    tail = text[len(text) - (limit - len(_CUT)):]
    newline = tail.find("\n")
    return _CUT + (tail[newline + 1:] if 0 <= newline < len(tail) - 1 else tail)


async def report_status(
    publisher: Publisher,
    source: Event,
    *,
    service: str,
    status: TaskStatusEnum,
    stage: str | None = None,
    progress: float | None = None,
    message: str | None = None,
    error: str | None = None,
    details: dict[str, Any] | None = None,
    **facts: Any,
) -> None:
    """Publish a transition of the source event's run; `facts` are RunStatusChanged's
    typed fields (sampling, clustering_method, error_traceback...)."""
    await publisher.publish(
        STATUS_CHANGED,
        RunStatusChanged(
            # Deterministic: a redelivered input reports the same transition once.
            event_id=derived_event_id(source.run_id, service, stage, status.value),
            namespace=source.namespace,
            run_id=source.run_id,
            cluster_id=source.cluster_id,
            task_id=source.task_id,
            status=status,
            service=service,
            stage=stage,
            progress=progress,
            message=message,
            error=error,
            details=details or {},
            **facts,
        ),
    )


class Progress:
    """How far a stage that runs in a worker thread has got, for its heartbeats. The
    thread calls it with the fraction done (0..1); a float assignment needs no lock."""

    def __init__(self) -> None:
        self.fraction: float | None = None

    def __call__(self, fraction: float) -> None:
        self.fraction = min(1.0, max(0.0, float(fraction)))


@asynccontextmanager
async def heartbeat(publisher: Publisher, source: Event, *, service: str, stage: str, start: float, end: float,
                    every_s: float) -> AsyncIterator[Progress]:
    """While the block runs, report the stage every `every_s` seconds: progress between
    `start` and `end` when the work tells its fraction (the `Progress` yielded), and
    how long it has run. A long stage (a layout of 1M points, a COPY of 10M documents)
    so shows that it moves, and the watchdog's stall can be minutes, not hours.

    The beats are liveness, not transitions: each has an event id of its own (a redone
    stage beats anew), and one that cannot be published is skipped, never fatal."""
    progress = Progress()
    started = time.monotonic()

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            done = progress.fraction
            message = f"{stage}: {time.monotonic() - started:.0f} s"
            if done is not None:
                message += f", {done:.0%} done"
            try:
                await publisher.publish(STATUS_CHANGED, RunStatusChanged(
                    namespace=source.namespace, run_id=source.run_id, cluster_id=source.cluster_id,
                    task_id=source.task_id, status=TaskStatusEnum.PROCESSING, service=service, stage=stage,
                    progress=round(start + (end - start) * (done or 0.0), 4), message=message))
            except Exception as exc:  # noqa: BLE001 - a missed beat is no reason to fail the run
                log.warning("run %s: heartbeat not published (%r)", source.run_id, exc)

    task = asyncio.create_task(beat())
    try:
        yield progress
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def kafka_group(settings: Settings, group: str) -> str:
    """The Kafka group id of a registry group in this deployment: the topic prefix,
    then the group (see contracts.topics)."""
    return settings.topic_prefix + group


class Consumer:
    """Runs one handler over one topic with the rules in the module docstring."""

    def __init__(
        self,
        *,
        topic: Topic,
        group_id: str,
        service: str,
        handler: Callable[[Any], Awaitable[None]],
        publisher: Publisher,
        settings: Settings,
        report_failures: bool = True,
    ) -> None:
        # The projector must not report failures to the topic it consumes itself.
        self.report_failures = report_failures
        self.topic = topic
        self.group_id = kafka_group(settings, group_id)
        self.service = service
        self.handler = handler
        self.publisher = publisher
        self.settings = settings

    def attach(self, broker: KafkaBroker) -> None:
        @broker.subscriber(
            self.settings.topic_prefix + self.topic.name,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,
            max_poll_interval_ms=self.settings.max_poll_interval_ms,
            title=f"{self.service}:{self.topic.name}",
        )
        async def _on_message(body: Any, message: KafkaMessage) -> None:
            # Parsing is ours, from the raw bytes: a bad event is dead-lettered verbatim.
            record = message.raw_message
            await self.process(message.body, partition=record.partition, offset=record.offset)

    async def process(self, body: bytes, *, partition: int | None = None, offset: int | None = None) -> None:
        # Metrics in one place (clusterflow/observability.py): the outcome of each event
        # (ok, failed, dead_lettered, canceled; each retry counts as `retried`) and the
        # time from its arrival to its end, retries included.
        started = time.perf_counter()
        outcome = "error"  # something below raised (e.g. the dead-letter publish itself)
        try:
            outcome = await self._process(body, partition=partition, offset=offset)
        finally:
            EVENTS.labels(self.topic.name, self.service, outcome).inc()
            HANDLER_SECONDS.labels(self.topic.name, self.service).observe(time.perf_counter() - started)

    async def _process(self, body: bytes, *, partition: int | None, offset: int | None) -> str:
        try:
            event = self.topic.event.model_validate_json(body)
        except (ValidationError, ValueError) as exc:
            await self.dead_letter(body, f"event does not parse as {self.topic.event.__name__}: {exc}", exc,
                                   partition=partition, offset=offset)
            return "dead_lettered"

        delay = self.settings.retry_backoff_s
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                await self.handler(event)
                return "ok"
            except RunFailed as exc:
                await self._fail_run(event, str(exc), exc)
                return "failed"
            except RunCanceled:
                log.info("%s: run %s was canceled; stopping its work", self.service, event.run_id)
                return "canceled"
            except Exception as exc:  # noqa: BLE001 - transient until proven otherwise
                if attempt == self.settings.max_attempts:
                    log.exception("%s gave up on %s after %d attempts", self.service, self.topic.name, attempt)
                    await self.dead_letter(body, f"failed after {attempt} attempts: {exc!r}", exc,
                                           partition=partition, offset=offset)
                    await self._fail_run(event, f"{self.service} failed: {exc}", exc)
                    return "dead_lettered"
                EVENTS.labels(self.topic.name, self.service, "retried").inc()
                log.warning("%s: attempt %d on %s failed (%r); retrying in %.1fs",
                            self.service, attempt, self.topic.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_backoff_max_s)

    async def _fail_run(self, event: Any, error: str, exc: BaseException) -> None:
        if self.report_failures and isinstance(event, Event):
            await report_status(
                self.publisher, event, service=self.service, status=TaskStatusEnum.FAILED,
                stage="failed", error=error, error_traceback=short_traceback(exc),
            )

    async def dead_letter(self, body: bytes, reason: str, exc: BaseException, *,
                          partition: int | None = None, offset: int | None = None) -> None:
        log.error("%s: dead-lettering a message from %s: %s", self.service, self.topic.name, reason)
        await self.publisher.publish(
            DEAD_LETTERS,
            DeadLetter(
                source_topic=self.topic.name,
                partition=partition,
                offset=offset,
                consumer_group=self.group_id,
                reason=reason[:4000],
                error_type=type(exc).__name__,
                original_value_b64=base64.b64encode(body).decode(),
            ),
        )
