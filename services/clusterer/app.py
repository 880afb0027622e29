"""The clusterer's composition root. Run: `python -m services.clusterer`."""
from __future__ import annotations

from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.idempotency import PostgresProcessedLog
from clusterflow.observability import install_worker_observability
from clusterflow.messaging import Consumer, KafkaPublisher, ensure_topics, make_broker
from clusterflow.runstate import PostgresRunState
from clusterflow.settings import Settings, get_settings
from clusterflow.storage import S3ObjectStore
from contracts.topics import CLUSTERER, DATASET_PREPARED
from services.clusterer.handler import SERVICE, Clusterer


def bootstrap(settings: Settings | None = None) -> FastStream:
    settings = settings or get_settings()
    broker = make_broker(settings, client_id="clusterflow-clusterer")
    engine = make_engine(settings.database_url, pool_size=2)
    publisher = KafkaPublisher(broker, settings.topic_prefix)
    clusterer = Clusterer(
        store=S3ObjectStore.from_settings(settings), publisher=publisher, processed=PostgresProcessedLog(engine),
        runs=PostgresRunState(engine),
    )
    Consumer(topic=DATASET_PREPARED, group_id=CLUSTERER, service=SERVICE, handler=clusterer.handle,
             publisher=publisher, settings=settings).attach(broker)

    app = FastStream(broker)
    install_worker_observability(app, service='clusterer', settings=settings, broker=broker,
                                 engine=engine, consumers=[(DATASET_PREPARED.name, CLUSTERER)])

    @app.on_startup
    async def _topics() -> None:
        await ensure_topics(settings.kafka_bootstrap, prefix=settings.topic_prefix)

    @app.after_shutdown
    async def _close() -> None:
        await engine.dispose()

    return app
