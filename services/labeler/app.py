"""The labeler's composition root. Run: `python -m services.labeler`."""
from __future__ import annotations

import asyncio

import httpx
from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.idempotency import PostgresProcessedLog
from clusterflow.messaging import KafkaPublisher, make_broker
from clusterflow.segments import cache_from_settings
from clusterflow.settings import Settings
from clusterflow.storage import S3ObjectStore
from clusterflow.worker import worker_app
from contracts.api import LLMProvider
from contracts.topics import EXECUTION_CLUSTERED, LABELER
from services.labeler.cache import PostgresLabelCache
from services.labeler.dedup import load_default_embedder
from services.labeler.handler import SERVICE, Labeler
from services.labeler.providers import CLIENTS, AnthropicClient, HTTPLLMClient, RetryPolicy, Sleep
from services.labeler.settings import LabelerSettings
from services.labeler.sources import ObjectStoreResults, PostgresPayloads


class LLMClients:
    """Makes a provider's client from the settings; None when it has no API key."""

    def __init__(self, settings: LabelerSettings, *, sleep: Sleep = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.sleep = sleep
        self.transport = transport

    def __call__(self, provider: LLMProvider, model: str) -> HTTPLLMClient | None:
        key = self.settings.api_key(provider)
        if key is None:
            return None
        s = self.settings
        kwargs = dict(
            model=model, api_key=key, base_url=s.base_url(provider), timeout_s=s.llm_timeout_s,
            retry=RetryPolicy(max_attempts=s.llm_max_attempts, backoff_s=s.llm_backoff_s,
                              backoff_max_s=s.llm_backoff_max_s, retry_after_max_s=s.llm_retry_after_max_s),
            sleep=self.sleep, transport=self.transport, default_max_tokens=s.llm_max_output_tokens,
            successors=s.llm_model_successors, inline_media_max_bytes=s.llm_inline_media_max_bytes,
            private_media_hosts=s.private_media_hosts(),
        )
        if provider is LLMProvider.anthropic:
            client: HTTPLLMClient = AnthropicClient(version=s.anthropic_version, **kwargs)
        else:
            client = CLIENTS[provider](**kwargs)
        return client


def bootstrap(settings: Settings | None = None) -> FastStream:
    if settings is None:
        settings = LabelerSettings()
    elif not isinstance(settings, LabelerSettings):
        settings = LabelerSettings(**settings.model_dump())
    broker = make_broker(settings, client_id="clusterflow-labeler")
    engine = make_engine(settings.database_url, pool_size=2)
    publisher = KafkaPublisher(broker, settings.topic_prefix)
    store = S3ObjectStore.from_settings(settings)
    labeler = Labeler(
        results=ObjectStoreResults(store, cache_from_settings(settings, SERVICE, store)),
        documents=PostgresPayloads(engine),
        publisher=publisher,
        processed=PostgresProcessedLog(engine),
        cache=PostgresLabelCache(engine),
        llm=LLMClients(settings),
        settings=settings,
        embedder=load_default_embedder() if settings.labeler_embedding_model else None,
    )
    return worker_app(service=SERVICE, group=LABELER, settings=settings, broker=broker, engine=engine,
                      publisher=publisher, handlers={EXECUTION_CLUSTERED: labeler.handle})
