"""The wiring every worker service shares: consumers, observability, topic creation and
clean shutdown around one FastStream app. Each service's `app.py` builds its handler
and calls `worker_app`."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.messaging import Consumer, Publisher, ensure_topics, kafka_group
from clusterflow.observability import install_worker_observability
from clusterflow.settings import Settings
from contracts.topics import Topic


def worker_app(
    *,
    service: str,
    group: str,
    settings: Settings,
    broker: KafkaBroker,
    engine: AsyncEngine,
    publisher: Publisher,
    handlers: dict[Topic, Callable[[Any], Awaitable[None]]],
    report_failures: bool = True,
    uses_s3: bool = True,
    before_scrape: Iterable[Callable[[], Awaitable[None]]] = (),
    background: dict[str, Callable[[], Awaitable[None]]] | None = None,
) -> FastStream:
    """`background`: long-running loops beside the consumers (the status service's
    watchdog, the preparer's sealer), by name: started once the app is up, canceled
    on shutdown."""
    for topic, handler in handlers.items():
        Consumer(topic=topic, group_id=group, service=service, handler=handler, publisher=publisher,
                 settings=settings, report_failures=report_failures).attach(broker)

    app = FastStream(broker)
    install_worker_observability(app, service=service, settings=settings, broker=broker, engine=engine,
                                 s3=uses_s3, consumers=[(t.name, kafka_group(settings, group)) for t in handlers],
                                 before_scrape=before_scrape)

    @app.on_startup
    async def _topics() -> None:
        await ensure_topics(settings.kafka_bootstrap, prefix=settings.topic_prefix)

    running: list[asyncio.Task] = []

    @app.after_startup
    async def _background() -> None:
        for name, loop in (background or {}).items():
            running.append(asyncio.create_task(loop(), name=name))

    @app.on_shutdown
    async def _stop_background() -> None:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    @app.after_shutdown
    async def _close() -> None:
        await engine.dispose()

    return app
