"""The gateway's composition root: settings, engine, broker, object store, routes.

Run: `uvicorn services.gateway.app:app` (or `python -m services.gateway`).
"""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from clusterflow.db import make_engine
from clusterflow.messaging import KafkaPublisher, ensure_topics, make_broker
from clusterflow.settings import Settings, get_settings
from clusterflow.storage import S3ObjectStore
from contracts.api import ErrorResponse, HTTPValidationError
from services.gateway import errors
from services.gateway.deps import Gateway
from services.gateway.repository import GatewayRepository
from services.gateway import web
from services.gateway.routes import clusters, collections, runs


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.database_url)
        broker = make_broker(settings, client_id="clusterflow-gateway")
        store = S3ObjectStore.from_settings(settings)
        await ensure_topics(settings.kafka_bootstrap, prefix=settings.topic_prefix)
        await broker.connect()
        app.state.gateway = Gateway(
            settings=settings, repo=GatewayRepository(engine),
            publisher=KafkaPublisher(broker, settings.topic_prefix), store=store,
        )
        try:
            yield
        finally:
            await broker.stop()
            await engine.dispose()

    app = FastAPI(
        title="clusterflow",
        version="0.1.0",
        description="Self-hosted clustering of embedded documents. The execute/task/error "
        "contract follows the hosted clusters API.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            422: {"model": HTTPValidationError},
            500: {"model": ErrorResponse},
        },
    )
    errors.install(app)
    for module in (collections, clusters):
        app.include_router(module.router)
    app.include_router(runs.router)
    app.include_router(runs.tasks_router)
    app.include_router(web.router)

    @app.get("/health", tags=["Operations"])
    async def health() -> dict:
        return {"status": "ok"}

    return app


app = create_app()
