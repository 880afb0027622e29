"""Readiness logic, the workers' metrics server and the Consumer's metrics, without I/O
beyond loopback sockets."""
from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from clusterflow.messaging import Consumer
from clusterflow.observability import MetricsServer, Readiness, ready_body
from clusterflow.settings import Settings
from contracts.topics import DATASET_PREPARED
from tests.fakes import RecordingPublisher
from tests.unit.test_events import EXAMPLES


async def ok() -> None:
    return None


async def down() -> None:
    raise ConnectionRefusedError("connection refused")


async def false() -> bool:
    return False


async def hangs() -> None:
    await asyncio.sleep(30)


async def test_ready_when_every_check_passes() -> None:
    assert await Readiness({"kafka": ok, "postgres": ok, "s3": ok}).problems() == {}


async def test_each_failing_dependency_is_named_with_its_reason() -> None:
    problems = await Readiness({"kafka": ok, "postgres": false, "s3": down, "slow": hangs},
                               timeout_s=0.2).problems()
    assert set(problems) == {"postgres", "s3", "slow"}
    assert "ConnectionRefusedError" in problems["s3"]
    assert "within 0.2s" in problems["slow"]
    status, body = ready_body(problems)
    assert status == 503 and body["message"] == "Not ready: postgres, s3, slow"
    assert ready_body({}) == (200, {"status": "ready"})


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


async def test_metrics_server_serves_health_ready_and_metrics() -> None:
    refreshed = []

    async def refresh() -> None:
        refreshed.append(1)

    checks = {"kafka": ok, "s3": ok}
    server = MetricsServer(Readiness(checks, timeout_s=0.5), "127.0.0.1", 0, before_scrape=[refresh])
    await server.start()
    try:
        assert (await _get(server.port, "/health"))[0] == 200
        assert (await _get(server.port, "/ready"))[0] == 200
        server.readiness.checks["s3"] = down
        status, body = await _get(server.port, "/ready")
        assert status == 503 and '"s3"' in body and "Not ready: s3" in body
        status, body = await _get(server.port, "/metrics")
        assert status == 200 and "clusterflow_events_total" in body and refreshed
        assert (await _get(server.port, "/nope"))[0] == 404
    finally:
        await server.stop()


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("clusterflow_events_total", {
        "topic": DATASET_PREPARED.name, "service": "unit-metrics", "outcome": outcome}) or 0.0


async def test_consumer_counts_outcomes_and_times_handlers() -> None:
    calls = []

    async def flaky(event) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise OSError("S3 away")

    settings = Settings(max_attempts=3, retry_backoff_s=0.01)
    consumer = Consumer(topic=DATASET_PREPARED, group_id="g", service="unit-metrics", handler=flaky,
                        publisher=RecordingPublisher(), settings=settings)
    before = {o: _count(o) for o in ("ok", "retried", "dead_lettered")}
    await consumer.process(b"not json")
    assert _count("dead_lettered") == before["dead_lettered"] + 1
    body = next(e for e in EXAMPLES if type(e) is DATASET_PREPARED.event).model_dump_json().encode()
    await consumer.process(body)
    assert _count("retried") == before["retried"] + 1
    assert _count("ok") == before["ok"] + 1
    assert REGISTRY.get_sample_value("clusterflow_handler_duration_seconds_count", {
        "topic": DATASET_PREPARED.name, "service": "unit-metrics"}) == 2
