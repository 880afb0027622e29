"""The gateway's composition root: settings, engine, broker, object store, routes.

Run: `uvicorn services.gateway.app:app` (or `python -m services.gateway`).
"""
from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response

from clusterflow.db import make_engine
from clusterflow.keys import KeyStore
from clusterflow.observability import HttpMetricsMiddleware, Readiness, metrics_payload, standard_checks
from clusterflow.messaging import KafkaPublisher, ensure_topics, make_broker
from clusterflow.settings import Settings, get_settings
from clusterflow.storage import S3ObjectStore
from contracts.api import ErrorResponse, HTTPValidationError
from services.gateway import errors
from services.gateway.deps import Gateway
from services.gateway.limits import BodyLimitMiddleware
from services.gateway.repository import GatewayRepository
from services.gateway import web
from services.gateway.routes import clusters, collections, enrich, runs


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> FastAPI:
    """The gateway's app. Given a `gateway` (its ports already built: fakes in unit
    tests), the lifespan serves over it and connects to nothing."""
    settings = settings or (gateway.settings if gateway is not None else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if gateway is not None:
            app.state.gateway = gateway
            app.state.readiness = Readiness()
            yield
            return
        # Enough connections for the request concurrency of one process: a smaller pool
        # opens and closes overflow connections under load (milliseconds each).
        engine = make_engine(settings.database_url, pool_size=20)
        autocommit = make_engine(settings.database_url, pool_size=20, autocommit=True)
        broker = make_broker(settings, client_id="clusterflow-gateway")
        store = S3ObjectStore.from_settings(settings)
        await ensure_topics(settings.kafka_bootstrap, prefix=settings.topic_prefix)
        await broker.connect()
        app.state.gateway = Gateway(
            settings=settings, repo=GatewayRepository(engine, autocommit),
            publisher=KafkaPublisher(broker, settings.topic_prefix), store=store,
            keys=KeyStore(autocommit, cache_seconds=settings.auth_cache_seconds),
        )
        app.state.broker = broker
        app.state.readiness = standard_checks(settings, broker=broker, engine=engine)
        # What was loaded by now (the engine's libraries: numpy, scikit-learn, umap,
        # numba...) lives as long as the process: keep it out of the cyclic collector's
        # full passes, which otherwise stall every request in flight for 100-200 ms.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await broker.stop()
            await engine.dispose()
            await autocommit.dispose()

    app = FastAPI(
        title="clusterflow",
        version="0.1.0",
        description="Self-hosted clustering of embedded documents. The execute/task/error "
        "contract follows the hosted clusters API.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorResponse},
            401: {"model": ErrorResponse, "description": "No API key, or not a valid one"},
            403: {"model": ErrorResponse, "description": "The API key may not use this namespace"},
            404: {"model": ErrorResponse},
            413: {"model": ErrorResponse, "description": "The body or a document is larger than allowed"},
            422: {"model": HTTPValidationError},
            500: {"model": ErrorResponse},
        },
    )
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_import_bytes)
    app.add_middleware(HttpMetricsMiddleware)
    for module in (collections, clusters):
        app.include_router(module.router)
    app.include_router(enrich.router)  # before runs: /v1/clusters/enrich is not a cluster id
    app.include_router(runs.router)
    app.include_router(runs.tasks_router)
    app.include_router(collections.namespaces_router)
    app.include_router(web.router)

    @app.get("/health", tags=["Operations"])
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", tags=["Operations"], responses={503: {"model": ErrorResponse}})
    async def ready() -> dict:
        """Whether the gateway can serve: Postgres answers, Kafka is connected and the S3
        bucket exists (clusterflow/observability.py); 503 names every failing one."""
        problems = await app.state.readiness.problems()
        if problems:
            raise errors.ApiError(503, "Not ready: " + ", ".join(sorted(problems)), code="not_ready",
                                  details=problems)
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        payload, content_type = metrics_payload()
        return Response(payload, media_type=content_type)

    return app


app = create_app()
