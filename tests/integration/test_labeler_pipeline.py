"""The labeler against the real Postgres and S3, with our fake LLM on a real port."""
from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest
from sqlalchemy import select

from clusterflow.datasets import write_dataset
from clusterflow.db import make_engine
from clusterflow.db.schema import clusters, collections, documents, label_cache
from clusterflow.idempotency import PostgresProcessedLog
from clusterflow.segments import Manifest, SegmentCache, SegmentRef
from clusterflow.storage import S3ObjectStore, artifact_key
from contracts.api import LLMLabeling
from contracts.topics import EXECUTION_LABELED
from services.labeler.app import LLMClients
from services.labeler.cache import PostgresLabelCache
from services.labeler.handler import Labeler
from services.labeler.providers import LLMUnavailable, OpenAIClient, RetryPolicy
from services.labeler.prompts import Prompt, TextPart
from services.labeler.settings import LabelerSettings
from services.labeler.sources import ObjectStoreResults, PostgresPayloads
from tests.support.labeler_fakes import RecordingPublisher, clustered_event, corpus, labeling_stats, topic_words
from tests.support.llm_servers import API_KEY, LLMServer, Reply, Slow

pytestmark = pytest.mark.integration

NAMESPACE = "ns_labeler"


@pytest.fixture
async def world(settings, unique, tmp_path):
    """A collection of topical documents, its cluster, and an engine; a decoy collection
    holds the same document ids with other text and must never be read."""
    c = corpus(per_topic=40, noise=4)
    engine = make_engine(settings.database_url, pool_size=2)
    col, decoy, cluster_id = f"col_{unique}", f"decoy_{unique}", f"clu_{unique}"
    async with engine.begin() as conn:
        for cid in (col, decoy):
            await conn.execute(collections.insert().values(collection_id=cid, namespace=NAMESPACE,
                                                           collection_name=cid, embeddings={"text": 16}))
        await conn.execute(documents.insert(), [
            {"collection_id": col, "document_id": d, "payload": p} for d, p in c.payloads.items()])
        await conn.execute(documents.insert(), [
            {"collection_id": decoy, "document_id": d, "payload": {"title": "zebra xylophone quokka"}}
            for d in c.payloads])
        await conn.execute(clusters.insert().values(
            cluster_id=cluster_id, namespace=NAMESPACE, cluster_name="labeler test", collection_ids=[col],
            embedding_name="text", clustering_method="kmeans"))
    store = S3ObjectStore.from_settings(settings)
    store.ensure_bucket()
    cache = SegmentCache(store, tmp_path / "segments", max_bytes=2**30)
    yield {"corpus": c, "engine": engine, "store": store, "cluster_id": cluster_id, "cache": cache}
    store.delete_prefix(f"{NAMESPACE}/{cluster_id}/")
    await engine.dispose()


def _write_run(world, run_id: str) -> dict[str, str]:
    """A run's results and its vectors as the preparer leaves them: one segment in S3,
    and the run's manifest over it."""
    c, store = world["corpus"], world["store"]
    keys = {name: artifact_key(NAMESPACE, world["cluster_id"], run_id, name) for name in ("members", "manifest")}
    store.put_parquet(keys["members"], c.members)
    ids = c.dataset["document_id"].to_list()
    segment = artifact_key(NAMESPACE, world["cluster_id"], run_id, "segment")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "segment.parquet")
        write_dataset(path, ids, c.dataset["vector"].to_numpy())
        store.upload(segment, path)
        manifest = Manifest.build(16, [SegmentRef(1, segment, len(ids))], np.ones(len(ids)), np.arange(len(ids)))
        manifest.write(path)
        store.upload(keys["manifest"], path)
    return keys


def _labeler(world, llm: LLMClients, publisher: RecordingPublisher) -> Labeler:
    engine = world["engine"]
    return Labeler(results=ObjectStoreResults(world["store"], world["cache"]), documents=PostgresPayloads(engine),
                   publisher=publisher, processed=PostgresProcessedLog(engine), cache=PostgresLabelCache(engine),
                   llm=llm, settings=llm.settings)


def _event(world, run_id: str, keys: dict[str, str], config=None):
    return clustered_event(world["corpus"].members, llm_labeling=config, run_id=run_id,
                           cluster_id=world["cluster_id"], namespace=NAMESPACE, members_key=keys["members"])


async def test_llm_labels_are_cached_in_postgres_and_the_second_run_calls_no_provider(world, settings, unique):
    with LLMServer() as server:
        labeler_settings = LabelerSettings(**settings.model_dump(), openai_api_key=API_KEY,
                                           openai_base_url=server.base_url, labeler_embedding_model=False)
        config = LLMLabeling(enabled=True, model_name="gpt-4o-mini-2024-07-18", cache_ttl_seconds=600)

        publisher = RecordingPublisher()
        labeler = _labeler(world, LLMClients(labeler_settings), publisher)
        first = _event(world, f"run_{unique}_a", _write_run(world, f"run_{unique}_a"), config)
        started = time.perf_counter()
        await labeler.handle(first)
        elapsed = time.perf_counter() - started
        assert len(server.fake.requests) == 1
        labeled = publisher.on(EXECUTION_LABELED)[0]
        assert labeled.llm_labeling_errors == []
        words = topic_words()
        for label in labeled.labels:
            if label.group_id == "cl_-1":
                assert label.label == "Noise"
                continue
            assert label.metadata["labeling"]["source"] == "llm"
            assert set(label.label.casefold().split()) & words[world["corpus"].topic_of[label.group_id]]
        prompt = server.fake.requests[0].prompt
        assert "zebra" not in prompt  # payloads came from the cluster's own collection
        assert elapsed < 10

        async with world["engine"].connect() as conn:
            rows = (await conn.execute(select(label_cache))).all()
        assert len(rows) == 4 and {r.model for r in rows} == {"gpt-4o-mini-2024-07-18"}
        now = datetime.now(timezone.utc)
        assert all(500 < (r.expires_at - now).total_seconds() <= 600 for r in rows)

        # Same documents, a new run: every cluster from the cache, no provider call.
        publisher2 = RecordingPublisher()
        labeler2 = _labeler(world, LLMClients(labeler_settings), publisher2)
        await labeler2.handle(_event(world, f"run_{unique}_b", _write_run(world, f"run_{unique}_b"), config))
        assert len(server.fake.requests) == 1
        second = publisher2.on(EXECUTION_LABELED)[0]
        assert [(l.group_id, l.label, l.keywords) for l in second.labels] == \
               [(l.group_id, l.label, l.keywords) for l in labeled.labels]
        assert labeling_stats(publisher2)["cache_hits"] == 4

        # A redelivery of the first event is skipped (the processed log in Postgres).
        await labeler.handle(first)
        assert len(publisher.on(EXECUTION_LABELED)) == 1 and len(server.fake.requests) == 1


async def test_text_labels_from_real_payloads_and_results(world, settings, unique):
    labeler_settings = LabelerSettings(**settings.model_dump(), openai_api_key=None, google_api_key=None,
                                       anthropic_api_key=None, labeler_embedding_model=False)
    publisher = RecordingPublisher()
    labeler = _labeler(world, LLMClients(labeler_settings), publisher)
    run = f"run_{unique}_t"
    await labeler.handle(_event(world, run, _write_run(world, run), LLMLabeling(enabled=True)))
    labeled = publisher.on(EXECUTION_LABELED)[0]
    words = topic_words()
    by_id = {l.group_id: l for l in labeled.labels}
    assert by_id["cl_-1"].label == "Noise"
    for cid, topic in world["corpus"].topic_of.items():
        label = by_id[cid]
        assert label.metadata["labeling"]["source"] == "ctfidf"
        assert set(label.label.casefold().replace(",", " ").split()) & words[topic], label.label
        assert not {"zebra", "xylophone", "quokka"} & set(label.keywords)


def test_vectors_of_a_few_members_are_read_through_the_run_manifest(world, unique):
    keys = _write_run(world, f"run_{unique}_v")
    results = ObjectStoreResults(world["store"], world["cache"])
    wanted = ["space-0003", "finance-0039", "noise-0001", "missing-doc"]
    got = results.vectors(keys["manifest"], wanted)
    assert set(got) == {"space-0003", "finance-0039", "noise-0001"}
    frame = world["corpus"].dataset.filter(pl.col("document_id") == "finance-0039")
    assert np.allclose(got["finance-0039"], frame["vector"].to_numpy()[0])
    assert results.members(keys["members"]).columns == ["document_id", "cluster_id", "distance_to_centroid"]
    assert results.vectors(artifact_key(NAMESPACE, world["cluster_id"], "run_none", "manifest"), wanted) == {}


async def test_a_slow_provider_times_out_over_a_real_socket_and_is_retried():
    with LLMServer() as server:
        server.fake.push(Slow(2.0), Slow(2.0), Reply('{"ok": 1}'))
        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        client = OpenAIClient(model="gpt-4o-mini-2024-07-18", api_key=API_KEY, base_url=server.base_url,
                              timeout_s=0.3, retry=RetryPolicy(max_attempts=3, backoff_s=0.1), sleep=sleep)
        try:
            reply = await client.complete(Prompt(system="JSON only", parts=[TextPart("json please")]))
            assert reply.text == '{"ok": 1}'
            assert [(a.outcome, a.delay) for a in client.attempts] == [("timeout", 0.1), ("timeout", 0.2),
                                                                        ("200", None)]
            server.fake.push(Slow(2.0), Slow(2.0), Slow(2.0))
            with pytest.raises(LLMUnavailable, match="timed out"):
                await client.complete(Prompt(system="JSON only", parts=[TextPart("json please")]))
        finally:
            await client.aclose()


async def test_the_labeler_consumes_an_event_from_kafka_through_the_consumer(world, settings, unique):
    """The service's wiring: the Consumer reads ExecutionClustered from Kafka (a topic of
    this test's own, so nothing else on the broker sees it) and runs the handler."""
    import asyncio
    import dataclasses

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from clusterflow.messaging import Consumer, KafkaPublisher, make_broker
    from contracts.topics import EXECUTION_CLUSTERED, LABELER

    topic = dataclasses.replace(EXECUTION_CLUSTERED, name=f"test.labeler.{unique}", partitions=1)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=settings.topic_prefix + topic.name, num_partitions=1,
                                            replication_factor=1)])
    finally:
        await admin.close()

    labeler_settings = LabelerSettings(**settings.model_dump(), openai_api_key=None, google_api_key=None,
                                       anthropic_api_key=None, labeler_embedding_model=False)
    outputs = RecordingPublisher()  # results recorded, not published on the shared topics
    labeler = _labeler(world, LLMClients(labeler_settings), outputs)
    broker = make_broker(settings, client_id=f"test-labeler-{unique}")
    Consumer(topic=topic, group_id=f"{LABELER}-{unique}", service="labeler", handler=labeler.handle,
             publisher=outputs, settings=settings).attach(broker)
    run = f"run_{unique}_k"
    event = _event(world, run, _write_run(world, run))
    await broker.start()
    try:
        await KafkaPublisher(broker, settings.topic_prefix).publish(topic, event)
        for _ in range(300):
            if outputs.on(EXECUTION_LABELED):
                break
            await asyncio.sleep(0.1)
    finally:
        await broker.stop()
    (labeled,) = outputs.on(EXECUTION_LABELED)
    assert labeled.run_id == run and {l.group_id for l in labeled.labels} >= {"cl_0", "cl_1", "cl_2", "cl_3"}
