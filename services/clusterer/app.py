"""The clusterer's composition root. Run: `python -m services.clusterer`."""
from __future__ import annotations

from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.idempotency import PostgresProcessedLog
from clusterflow.messaging import KafkaPublisher, make_broker
from clusterflow.runstate import PostgresRunState
from clusterflow.settings import Settings, get_settings
from clusterflow.storage import S3ObjectStore
from clusterflow.worker import worker_app
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
    return worker_app(service=SERVICE, group=CLUSTERER, settings=settings, broker=broker, engine=engine,
                      publisher=publisher, handlers={DATASET_PREPARED: clusterer.handle})
