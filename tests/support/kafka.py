"""Kafka and read-model helpers for the tests that publish, replay and inspect topics.

Synchronous wrappers (each runs its own event loop) over aiokafka and the read model,
for the e2e tests: publish raw bytes, read a topic from offset 0, wait until consumer
groups have caught up, rewind a group, and snapshot what the projector wrote.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from clusterflow.db.schema import executions, processed_events, run_events, tasks
from clusterflow.messaging import kafka_group
from clusterflow.settings import Settings


def topic(settings: Settings, name: str) -> str:
    return settings.topic_prefix + name


def publish_raw(settings: Settings, name: str, values: list[tuple[bytes | None, bytes]]) -> None:
    """Publish (key, value) records verbatim to the session's topic `name`."""
    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in values:
                await producer.send_and_wait(topic(settings, name), value=value, key=key)
        finally:
            await producer.stop()

    asyncio.run(main())


async def _partitions(consumer: AIOKafkaConsumer, full: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(full)
    deadline = time.monotonic() + 10
    while not parts and time.monotonic() < deadline:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way to wait
        parts = consumer.partitions_for_topic(full)
    return [TopicPartition(full, p) for p in sorted(parts or ())]


def read_topic(settings: Settings, name: str) -> list[Any]:
    """Every record of the session's topic `name`, from offset 0 to its current end."""
    async def main() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await _partitions(consumer, topic(settings, name))
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            async def behind() -> bool:
                for tp in tps:
                    if await consumer.position(tp) < ends[tp]:
                        return True
                return False

            while await behind():
                batch = await consumer.getmany(timeout_ms=1000)
                for recs in batch.values():
                    records.extend(r for r in recs if r.offset < ends[TopicPartition(r.topic, r.partition)])
            return records
        finally:
            await consumer.stop()

    return asyncio.run(main())


async def _lag(settings: Settings, group: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(kafka_group(settings, group))
        lag = {}
        for name in names:
            tps = await _partitions(consumer, topic(settings, name))
            ends = await consumer.end_offsets(tps)
            lag[name] = sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


def wait_consumed(settings: Settings, groups: dict[str, list[str]], timeout: float = 120) -> None:
    """Wait until every group (registry names; the deployment's prefix is added) has
    committed the end of each of its topics."""
    deadline = time.monotonic() + timeout
    lag: dict[str, Any] = {}
    while time.monotonic() < deadline:
        lag = {g: asyncio.run(_lag(settings, g, names)) for g, names in groups.items()}
        if all(v == 0 for per in lag.values() for v in per.values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"consumer groups still behind after {timeout}s: {lag}")


def rewind_group(settings: Settings, group: str, names: list[str], timeout: float = 90) -> None:
    """Commit offset 0 on every partition of `names` for `group`: the group's next member
    reads those topics again from the start. Its members must have stopped; the broker
    refuses the commit until it has let them go (a member that did not leave cleanly is
    dropped after its session timeout), so this retries until then."""
    from aiokafka.errors import CommitFailedError, KafkaError

    async def attempt() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                    group_id=kafka_group(settings, group), enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [tp for name in names for tp in await _partitions(consumer, topic(settings, name))]
            consumer.assign(tps)
            await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
        finally:
            await consumer.stop()

    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(attempt())
            return
        except (CommitFailedError, KafkaError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def snapshot(settings: Settings, run_ids: list[str] | None = None) -> dict[str, list[dict]]:
    """The projector's tables (optionally for some runs), every column, in a stable order."""
    async def main() -> dict[str, list[dict]]:
        engine = create_async_engine(settings.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                out = {}
                for table, key in ((executions, "run_id"), (tasks, "task_id"), (run_events, "event_id")):
                    query = select(table).order_by(table.c[key])
                    if run_ids is not None:
                        query = query.where(table.c.run_id.in_(run_ids))
                    out[table.name] = [dict(r) for r in (await conn.execute(query)).mappings()]
                out["processed_events"] = [dict(r) for r in (await conn.execute(
                    select(processed_events).order_by(processed_events.c.consumer, processed_events.c.event_id)
                )).mappings()]
                return out
        finally:
            await engine.dispose()

    return asyncio.run(main())


def query(settings: Settings, statement, params: dict | None = None) -> list[dict]:
    async def main() -> list[dict]:
        engine = create_async_engine(settings.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return [dict(r) for r in (await conn.execute(statement, params or {})).mappings()]
        finally:
            await engine.dispose()

    return asyncio.run(main())


def execute(settings: Settings, statement, params: dict | None = None) -> None:
    """Run one statement in its own transaction (committed)."""
    async def main() -> None:
        engine = create_async_engine(settings.database_url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(statement, params or {})
        finally:
            await engine.dispose()

    asyncio.run(main())
