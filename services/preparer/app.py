"""The preparer's composition root. Run: `python -m services.preparer`."""
from __future__ import annotations

from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.idempotency import PostgresProcessedLog
from clusterflow.observability import install_worker_observability
from clusterflow.messaging import Consumer, KafkaPublisher, ensure_topics, make_broker
from clusterflow.runstate import PostgresRunState
from clusterflow.settings import Settings, get_settings
from clusterflow.storage import S3ObjectStore
from contracts.topics import EXECUTION_REQUESTED, PREPARER
from services.preparer.export import PostgresDocuments
from services.preparer.handler import SERVICE, Preparer


def bootstrap(settings: Settings | None = None) -> FastStream:
    settings = settings or get_settings()
    broker = make_broker(settings, client_id="clusterflow-preparer")
    engine = make_engine(settings.database_url)
    publisher = KafkaPublisher(broker, settings.topic_prefix)
    preparer = Preparer(
        documents=PostgresDocuments(engine),
        store=S3ObjectStore.from_settings(settings),
        publisher=publisher,
        processed=PostgresProcessedLog(engine),
        runs=PostgresRunState(engine),
    )
    Consumer(topic=EXECUTION_REQUESTED, group_id=PREPARER, service=SERVICE, handler=preparer.handle,
             publisher=publisher, settings=settings).attach(broker)

    app = FastStream(broker)
    install_worker_observability(app, service='preparer', settings=settings, broker=broker,
                                 engine=engine, consumers=[(EXECUTION_REQUESTED.name, PREPARER)])

    @app.on_startup
    async def _topics() -> None:
        await ensure_topics(settings.kafka_bootstrap, prefix=settings.topic_prefix)

    @app.after_shutdown
    async def _close() -> None:
        await engine.dispose()

    return app
