"""Metrics, health and readiness for every service (Prometheus + probes).

The metrics live in the process's default `prometheus_client` registry and are
recorded in few places:
- `clusterflow.messaging.Consumer` counts each consumed event by outcome and times
  its handler (`clusterflow_events_total`, `clusterflow_handler_duration_seconds`);
- `KafkaPublisher` counts what is published (`clusterflow_events_published_total`);
- the clusterer times the clustering algorithm (`clusterflow_algorithm_seconds`);
- workers measure their consumer group's lag every `metrics_lag_interval_seconds`
  (`clusterflow_consumer_lag`: end offset minus committed offset per partition);
- the status service counts the tasks table by status at each scrape (`clusterflow_runs`);
- the gateway counts its HTTP requests (`clusterflow_http_requests_total`).

Probes: `/health` says the process is alive (always 200); `/ready` runs the named
dependency checks (Kafka, Postgres, S3) concurrently, each with a timeout, and answers
503 naming every failing one. The gateway serves both on its own port; each worker
runs `MetricsServer`, a tiny asyncio HTTP server on `CLUSTERFLOW_METRICS_PORT`
(default: preparer 9101, clusterer 9102, labeler 9103, status 9104; 0 turns it off).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import urllib3
from minio import Minio
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("clusterflow.observability")

DEFAULT_METRICS_PORTS = {"preparer": 9101, "clusterer": 9102, "labeler": 9103, "status": 9104}

EVENTS = Counter(
    "clusterflow_events", "Events consumed, by outcome (ok, failed, retried, dead_lettered)",
    ["topic", "service", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "clusterflow_handler_duration_seconds", "Time from an event's arrival to its last handler attempt's end",
    ["topic", "service"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
PUBLISHED = Counter("clusterflow_events_published", "Events published", ["topic"])
CONSUMER_LAG = Gauge(
    "clusterflow_consumer_lag", "End offset minus the group's committed offset",
    ["service", "group", "topic", "partition"],
)
RUNS = Gauge("clusterflow_runs", "Tasks in the tasks table, by status", ["status"])
ALGORITHM_SECONDS = Histogram(
    "clusterflow_algorithm_seconds", "Clustering algorithm time, by method", ["method"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
HTTP_REQUESTS = Counter(
    "clusterflow_http_requests", "Gateway HTTP requests", ["method", "route", "status"],
)


def algorithm_timer(method: str):
    """`algorithm_timer(m)(fn)` is `fn`, timed into `clusterflow_algorithm_seconds{method=m}`."""
    return ALGORITHM_SECONDS.labels(method=method).time()


class Stopwatch:
    """Seconds per stage of one run, for the log line that says where its time went."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now
        return self.laps[stage]

    def __str__(self) -> str:
        return ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in self.laps.items())


def metrics_payload() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


# ------------------------------------------------------------------------ readiness

Check = Callable[[], Awaitable[Any]]


class Readiness:
    """Named dependency checks; a check fails by raising, returning False, or timing out."""

    def __init__(self, checks: dict[str, Check] | None = None, timeout_s: float = 3.0) -> None:
        self.checks: dict[str, Check] = dict(checks or {})
        self.timeout_s = timeout_s

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def _one(self, check: Check) -> str | None:
        try:
            result = await asyncio.wait_for(check(), self.timeout_s)
        except asyncio.TimeoutError:
            return f"no answer within {self.timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"{type(exc).__name__}: {exc}"[:300]
        return "check failed" if result is False else None

    async def problems(self) -> dict[str, str]:
        """{dependency: why} for every failing check; empty when ready."""
        names = list(self.checks)
        results = await asyncio.gather(*(self._one(self.checks[n]) for n in names))
        return {n: why for n, why in zip(names, results) if why is not None}


def postgres_check(engine) -> Check:
    from sqlalchemy import text

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    return check


def kafka_check(broker) -> Check:
    async def check() -> bool:
        return bool(await broker.ping(timeout=2.0))
    return check


def s3_check(settings) -> Check:
    """`bucket_exists` on a client of its own: no retries, short timeouts (the services'
    client retries for minutes, which a probe must not)."""
    client = Minio(
        endpoint=settings.s3_endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
        secure=settings.s3_secure, region=settings.s3_region,
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=2.0),
                                        retries=urllib3.Retry(total=0)),
    )

    async def check() -> None:
        if not await asyncio.to_thread(client.bucket_exists, bucket_name=settings.s3_bucket):
            raise RuntimeError(f"bucket {settings.s3_bucket!r} does not exist")
    return check


def standard_checks(settings, *, broker=None, engine=None, s3: bool = True) -> Readiness:
    readiness = Readiness()
    if broker is not None:
        readiness.add("kafka", kafka_check(broker))
    if engine is not None:
        readiness.add("postgres", postgres_check(engine))
    if s3:
        readiness.add("s3", s3_check(settings))
    return readiness


def ready_body(problems: dict[str, str]) -> tuple[int, dict]:
    if problems:
        return 503, {"status": "not ready", "message": "Not ready: " + ", ".join(sorted(problems)),
                     "failing": problems}
    return 200, {"status": "ready"}


# ------------------------------------------------------------------- worker server

class MetricsServer:
    """`/metrics`, `/health` and `/ready` on a port of its own, for the workers (plain
    asyncio: one GET per connection, nothing else). `before_scrape` hooks refresh
    gauges (e.g. the runs by status) before `/metrics` is rendered."""

    def __init__(self, readiness: Readiness, host: str, port: int,
                 before_scrape: Iterable[Callable[[], Awaitable[None]]] = ()) -> None:
        self.readiness = readiness
        self.host = host
        self.port = port
        self.before_scrape = list(before_scrape)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics, /health and /ready on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def respond(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if path == "/health":
            return 200, "application/json", b'{"status": "ok"}'
        if path == "/ready":
            status, body = ready_body(await self.readiness.problems())
            return status, "application/json", json.dumps(body).encode()
        if path == "/metrics":
            for hook in self.before_scrape:
                try:
                    await asyncio.wait_for(hook(), 5.0)
                except Exception as exc:  # noqa: BLE001 - a stale gauge beats no metrics
                    log.warning("metrics refresh failed: %r", exc)
            payload, content_type = metrics_payload()
            return 200, content_type, payload
        return 404, "text/plain", b"not found"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method not in ("GET", "HEAD"):
                status, content_type, body = 405, "text/plain", b"method not allowed"
            else:
                status, content_type, body = await self.respond(path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# ------------------------------------------------------------------ consumer lag

class LagMonitor:
    """Every `interval_s`, sets `clusterflow_consumer_lag` for the group's partitions of
    `topics`: end offset minus committed offset (a partition the group never committed
    counts from its beginning offset)."""

    def __init__(self, bootstrap: str, service: str, group_id: str, topics: list[str], interval_s: float) -> None:
        self.bootstrap = bootstrap
        self.service = service
        self.group_id = group_id
        self.topics = topics
        self.interval_s = interval_s

    async def measure(self, admin, consumer) -> dict[tuple[str, int], int]:
        from aiokafka.structs import TopicPartition

        committed = await admin.list_consumer_group_offsets(self.group_id)
        described = await admin.describe_topics(self.topics)
        tps = [TopicPartition(d["topic"], p["partition"]) for d in described if not d.get("error_code")
               for p in sorted(d["partitions"], key=lambda p: p["partition"])]
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        lag = {}
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else begins[tp]
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - done)
        return lag

    async def run_forever(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            try:
                await admin.start()
                await consumer.start()
                while True:
                    for (topic, partition), value in (await self.measure(admin, consumer)).items():
                        CONSUMER_LAG.labels(self.service, self.group_id, topic, str(partition)).set(value)
                    await asyncio.sleep(self.interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka away: try again later
                log.warning("%s: measuring consumer lag failed: %r", self.service, exc)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await admin.close()
            await asyncio.sleep(self.interval_s)


# ------------------------------------------------------------- status: runs gauge

def runs_by_status_refresher(engine) -> Callable[[], Awaitable[None]]:
    from sqlalchemy import text

    from contracts.api import TaskStatusEnum

    async def refresh() -> None:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT status, count(*) FROM tasks GROUP BY status"))).all()
        counts = {s.value: 0 for s in TaskStatusEnum}
        counts.update({status: n for status, n in rows})
        for status, n in counts.items():
            RUNS.labels(status=status).set(n)
    return refresh


# -------------------------------------------------------------- worker wiring

def install_worker_observability(app, *, service: str, settings, broker, engine=None,
                                 consumers: Iterable[tuple[str, str]] = (), s3: bool = True,
                                 before_scrape: Iterable[Callable[[], Awaitable[None]]] = ()) -> None:
    """Hooks a FastStream app: after startup, the metrics server and the lag monitor
    for `consumers` ((topic name without prefix, group id) pairs); stopped on shutdown."""
    port = settings.metrics_port if settings.metrics_port is not None else DEFAULT_METRICS_PORTS.get(service, 0)
    if not port:
        return
    readiness = standard_checks(settings, broker=broker, engine=engine, s3=s3)
    server = MetricsServer(readiness, settings.metrics_host, port, before_scrape)
    groups: dict[str, list[str]] = {}
    for topic, group in consumers:
        groups.setdefault(group, []).append(settings.topic_prefix + topic)
    monitors = [LagMonitor(settings.kafka_bootstrap, service, g, t, settings.metrics_lag_interval_seconds)
                for g, t in groups.items()]
    tasks: list[asyncio.Task] = []

    @app.after_startup
    async def _observe() -> None:
        await server.start()
        tasks.extend(asyncio.create_task(m.run_forever(), name=f"lag:{m.group_id}") for m in monitors)

    @app.on_shutdown
    async def _unobserve() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()



# ---------------------------------------------------------------- gateway HTTP

class HttpMetricsMiddleware:
    """Counts HTTP requests by method, route template (not the raw path: ids would
    explode the series) and status."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], route, str(status["code"])).inc()
