"""The status projector's composition root: it alone writes the tasks and executions
read models, from the status topic and the result events.

Run: `python -m services.status`.
"""
from __future__ import annotations

from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.messaging import KafkaPublisher, make_broker
from clusterflow.observability import runs_by_status_refresher
from clusterflow.settings import Settings, get_settings
from clusterflow.worker import worker_app
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

    watchdog = Watchdog(engine, publisher, settings.watchdog_stall_seconds, settings.watchdog_interval_seconds)
    # The projector must not report failures to the topic it consumes itself.
    app = worker_app(service=SERVICE, group=STATUS, settings=settings, broker=broker, engine=engine,
                     publisher=publisher, handlers={topic: handle for topic in consumed_by(STATUS)},
                     report_failures=False, uses_s3=False, before_scrape=[runs_by_status_refresher(engine)],
                     background={"watchdog": watchdog.run_forever})
    return app
