"""The preparer's composition root. Run: `python -m services.preparer`."""
from __future__ import annotations

from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.idempotency import PostgresProcessedLog
from clusterflow.messaging import KafkaPublisher, make_broker
from clusterflow.runstate import PostgresRunState
from clusterflow.settings import Settings, choose_engine, get_settings
from clusterflow.storage import S3ObjectStore
from clusterflow.worker import worker_app
from contracts.topics import EXECUTION_REQUESTED, IMPORT_REQUESTED, PREPARER
from services.preparer.export import PostgresDocuments
from services.preparer.handler import SERVICE, Preparer
from services.preparer.importer import Importer
from services.preparer.segments import Sealer, SegmentStore


def bootstrap(settings: Settings | None = None) -> FastStream:
    settings = settings or get_settings()
    broker = make_broker(settings, client_id="clusterflow-preparer")
    engine = make_engine(settings.database_url)
    publisher = KafkaPublisher(broker, settings.topic_prefix)
    store = S3ObjectStore.from_settings(settings)
    segments = SegmentStore(engine, store, max_rows=settings.segment_max_rows)
    sealer = Sealer(segments, interval_s=settings.seal_interval_seconds, min_rows=settings.seal_min_rows,
                    compaction_every_s=settings.compaction_interval_seconds,
                    min_live_ratio=settings.compaction_min_live_ratio,
                    retention_s=settings.segment_retention_seconds)
    preparer = Preparer(
        documents=PostgresDocuments(engine),
        segments=segments,
        store=store,
        publisher=publisher,
        processed=PostgresProcessedLog(engine),
        runs=PostgresRunState(engine),
        heartbeat_s=settings.heartbeat_seconds,
        on_ray=lambda n: choose_engine(settings.engine, settings.ray_address, n, settings.ray_min_points) == "ray",
    )
    importer = Importer(engine=engine, store=store, publisher=publisher, processed=PostgresProcessedLog(engine),
                        max_rows=settings.segment_max_rows, heartbeat_s=min(settings.heartbeat_seconds, 2.0))
    return worker_app(service=SERVICE, group=PREPARER, settings=settings, broker=broker, engine=engine,
                      publisher=publisher, handlers={EXECUTION_REQUESTED: preparer.handle,
                                                     IMPORT_REQUESTED: importer.handle},
                      background={"sealer": sealer.run})
