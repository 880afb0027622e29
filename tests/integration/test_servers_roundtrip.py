"""The foundation against the real servers: Kafka, Postgres (migrated), S3."""
from __future__ import annotations

import asyncio
import uuid

import numpy as np
import polars as pl
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from polars.testing import assert_frame_equal
from sqlalchemy import select

from clusterflow.db import make_engine
from clusterflow.db.schema import clusters, collections, document_vectors, documents
from clusterflow.messaging import KafkaPublisher, make_broker
from clusterflow.storage import S3ObjectStore
from contracts.api import LogicalOperator
from contracts.events import ExecutionRequested, RunOptions
from contracts.topics import EXECUTION_REQUESTED, Topic

pytestmark = pytest.mark.integration


async def test_event_published_to_kafka_is_consumed_by_a_group_and_parses_back_equal(settings, unique):
    # A topic of its own, so nothing else on the broker interferes.
    topic = Topic(name=f"test.roundtrip.{unique}", event=ExecutionRequested, key="cluster_id",
                  producers=("test",), consumers=("test",), partitions=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic.name, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()

    sent = ExecutionRequested(
        namespace="ns1", run_id="run_1", cluster_id="clust_1", task_id="task_1",
        options=RunOptions(
            sample_size=500, vis_n_components=3,
            filters=LogicalOperator.model_validate({"AND": [{"field": "a.b", "operator": "gte", "value": 3}],
                                                    "category": "news"}),
        ),
    )
    broker = make_broker(settings, client_id="test")
    await broker.connect()
    try:
        await KafkaPublisher(broker).publish(topic, sent)
    finally:
        await broker.stop()

    consumer = AIOKafkaConsumer(topic.name, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"test-group-{unique}", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert record.key == b"clust_1"
    assert dict(record.headers)["event_type"] == b"execution.requested"
    received = ExecutionRequested.model_validate_json(record.value)
    assert received == sent


async def test_postgres_round_trip_through_the_migrated_schema(settings, unique):
    engine = make_engine(settings.database_url)
    vector = np.arange(4, dtype="<f4")
    try:
        async with engine.begin() as conn:
            await conn.execute(collections.insert().values(
                collection_id=f"col_{unique}", namespace="ns", collection_name=f"c{unique}",
                embeddings={"text": 4}))
            await conn.execute(documents.insert().values(
                collection_id=f"col_{unique}", document_id="d1", payload={"title": "héllo", "n": [1, 2.5]}))
            await conn.execute(document_vectors.insert().values(
                collection_id=f"col_{unique}", document_id="d1", embedding_name="text", vector=vector.tobytes()))
            await conn.execute(clusters.insert().values(
                cluster_id=f"clust_{unique}", namespace="ns", cluster_name="c", collection_ids=[f"col_{unique}"],
                embedding_name="text", clustering_method="kmeans", algorithm_params={"n_clusters": 3}))
        async with engine.connect() as conn:
            doc = (await conn.execute(select(documents).where(documents.c.collection_id == f"col_{unique}"))).one()
            vec = await conn.scalar(select(document_vectors.c.vector).where(
                document_vectors.c.collection_id == f"col_{unique}"))
            cluster = (await conn.execute(select(clusters).where(clusters.c.cluster_id == f"clust_{unique}"))).one()
        assert doc.payload == {"title": "héllo", "n": [1, 2.5]}
        assert np.array_equal(np.frombuffer(vec, dtype="<f4"), vector)
        assert cluster.collection_ids == [f"col_{unique}"] and cluster.algorithm_params == {"n_clusters": 3}
        assert cluster.created_at is not None

        # Deleting the collection cascades to its documents and vectors.
        async with engine.begin() as conn:
            await conn.execute(collections.delete().where(collections.c.collection_id == f"col_{unique}"))
        async with engine.connect() as conn:
            left = (await conn.execute(select(document_vectors).where(
                document_vectors.c.collection_id == f"col_{unique}"))).all()
        assert left == []
    finally:
        await engine.dispose()


def test_polars_parquet_round_trip_through_s3(settings, unique):
    store = S3ObjectStore.from_settings(settings)
    store.ensure_bucket()
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({
        "document_id": [f"doc_{i}" for i in range(1000)],
        "vector": pl.Series(rng.normal(size=(1000, 16)).astype(np.float32), dtype=pl.Array(pl.Float32, 16)),
        "score": rng.random(1000),
        "note": [None if i % 7 else "séptimo" for i in range(1000)],
    })
    key = f"tests/{unique}/{uuid.uuid4().hex}/frame.parquet"
    assert store.put_parquet(key, frame) > 0
    assert store.exists(key)
    assert_frame_equal(store.get_parquet(key), frame)
    assert store.delete_prefix(f"tests/{unique}/") == 1
    assert not store.exists(key)


def test_small_objects_round_trip_through_s3_whole(settings, unique):
    """put_bytes/get_bytes (the Ray job's JSON spec and result): the bytes come back
    equal, and a missing key is FileNotFoundError, as from the in-memory fake."""
    store = S3ObjectStore.from_settings(settings)
    store.ensure_bucket()
    key = f"tests/{unique}/engine-spec.json"
    data = '{"run_id": "run_1", "ünicode": true}'.encode()
    assert store.put_bytes(key, data, content_type="application/json") == len(data)
    assert store.get_bytes(key) == data
    assert store.delete_prefix(f"tests/{unique}/") == 1
    with pytest.raises(FileNotFoundError):
        store.get_bytes(key)
