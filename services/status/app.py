"""The status projector's composition root: it alone writes the tasks and executions
read models, from the status topic and the result events.

Run: `python -m services.status`.
"""
from __future__ import annotations

import asyncio
import contextlib

from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.observability import install_worker_observability, runs_by_status_refresher
from clusterflow.messaging import Consumer, KafkaPublisher, ensure_topics, make_broker
from clusterflow.settings import Settings, get_settings
from contracts.topics import STATUS, consumed_by
from services.status.store import ReadModelStore
from services.status.watchdog import Watchdog

SERVICE = "status"


def bootstrap(settings: Settings | None = None) -> FastStream:
    settings = settings or get_settings()
    broker = make_broker(settings, client_id="clusterflow-status")
    engine = make_engine(settings.database_url)
    store = ReadModelStore(engine)
    publisher = KafkaPublisher(broker, settings.topic_prefix)

    async def handle(event) -> None:
        await store.project(event)

    for topic in consumed_by(STATUS):
        Consumer(topic=topic, group_id=STATUS, service=SERVICE, handler=handle,
                 publisher=publisher, settings=settings, report_failures=False).attach(broker)

    app = FastStream(broker)
    install_worker_observability(app, service='status', settings=settings, broker=broker,
                                 engine=engine, s3=False,
                                 consumers=[(t.name, STATUS) for t in consumed_by(STATUS)],
                                 before_scrape=[runs_by_status_refresher(engine)])

    @app.on_startup
    async def _topics() -> None:
        await ensure_topics(settings.kafka_bootstrap, prefix=settings.topic_prefix)

    watchdog = Watchdog(engine, publisher, settings.watchdog_stall_seconds, settings.watchdog_interval_seconds)
    running: list[asyncio.Task] = []

    @app.after_startup
    async def _watch() -> None:
        running.append(asyncio.create_task(watchdog.run_forever(), name="watchdog"))

    @app.on_shutdown
    async def _unwatch() -> None:
        for task in running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @app.after_shutdown
    async def _close() -> None:
        await engine.dispose()

    return app
