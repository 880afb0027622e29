"""The execute endpoint at a steady rate on loopback: achieved rate and latency percentiles.

    .venv/bin/python bench/execute_latency.py [--rate 200] [--seconds 20] [--warmup 3]

What it does: starts the servers (`deploy/local/servers.sh start`, reused when they
run), makes a database of its own (migrated, dropped at the end) and a Kafka topic
prefix of its own (deleted at the end), and starts the gateway alone, as the stack
does (`uvicorn services.gateway.app:app`, one process): no worker consumes the runs it
queues, so what is measured is the gateway with Postgres and Kafka behind it, the
whole execute path (authentication, the cluster lookup, the run request row, the
ExecutionRequested publish with acks=all, the queue position). It creates an API key,
a collection of 200 documents and a cluster, then sends `POST /v1/clusters/{id}/execute`
open-loop: request i leaves at t0 + i/rate whether or not earlier ones were answered
(a closed loop would hide queueing). Latency is from the moment a request is sent to
its answer, on keep-alive connections of a minimal HTTP/1.1 client (httpx cost about as
much CPU as the gateway itself and, on 2 cores, capped the rate it could send). Prints
the achieved rate, the error count, p50/p95/p99/max and the CPU the gateway used; the
target is p99 <= 50 ms at 200 requests per second. Exit 1 when a request failed.

Options: `--target task|health` measures GET /v1/tasks/{id} or GET /health instead,
`--workers N` runs N gateway processes, `--profile FILE` records the gateway with
py-spy during the measured phase. The machine should be otherwise idle: other
processes on the same cores show up directly in the tail latencies.

Measured on the 2-core development machine, otherwise idle (2026-11-29): 200.0/s
achieved, p50 4.1 ms, p95 6.0 ms, p99 11.2 ms, max 35.9 ms, no errors; the gateway used
68% of a core (3.4 ms of CPU a request).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clusterflow.db import migrate  # noqa: E402
from clusterflow.keys import create_key  # noqa: E402
from clusterflow.settings import Settings  # noqa: E402
from clusterflow.stack import Stack  # noqa: E402


def server_settings() -> Settings:
    subprocess.run(["bash", str(ROOT / "deploy/local/servers.sh"), "start"], check=True, capture_output=True)
    env = subprocess.run(["bash", str(ROOT / "deploy/local/servers.sh"), "env"], check=True, capture_output=True,
                         text=True).stdout
    values = {}
    for line in env.splitlines():
        if line.startswith("export CLUSTERFLOW_"):
            key, _, value = line[len("export CLUSTERFLOW_"):].partition("=")
            values[key.lower()] = value.strip().strip("'\"")
    return Settings(**values)


async def admin(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def delete_topics(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.start()
    try:
        mine = [t for t in await client.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            await client.delete_topics(mine)
    finally:
        await client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Connections:
    """Keep-alive HTTP/1.1 connections on loopback, one request at a time each: a
    minimal client, so that the load generator (on the same cores) costs far less CPU
    than the server it measures (httpx costs about as much as the gateway itself)."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self) -> int:
        if self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                # The server closed this keep-alive connection while it sat idle (uvicorn's
                # timeout is 5 s); like any HTTP client, send again on a fresh one.
                writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        if b"connection: close" in head.lower():
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def load(port: int, headers: dict, method: str, path: str, rate: float, seconds: float
               ) -> tuple[list[float], int, float, float]:
    """Open loop: returns (latencies in ms, errors, seconds the sending took, p99 of how
    late requests left, in ms)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    pool = Connections("127.0.0.1", port, head.encode())
    latencies: list[float] = []
    lateness: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        sent = time.perf_counter()
        lateness.append((sent - due) * 1000)
        try:
            status = await asyncio.wait_for(pool.call(), 30)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            status = type(exc).__name__
        latencies.append((time.perf_counter() - sent) * 1000)
        if status != 200:
            errors += 1
            print(f"  error: {status}", file=sys.stderr)

    total = int(rate * seconds)
    t0 = time.perf_counter()
    tasks = []
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    pool.close()
    return latencies, errors, elapsed, percentile(lateness, 99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds at the same rate, not counted")
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (uvicorn --workers)")
    parser.add_argument("--target", default="execute", choices=["execute", "task", "health"],
                        help="what to call: the execute endpoint (default), GET a task, or GET /health "
                             "(the framework's own cost)")
    parser.add_argument("--profile", metavar="FILE", default=None,
                        help="record the gateway with py-spy during the measured phase (collapsed stacks)")
    args = parser.parse_args()

    base = server_settings()
    name = f"clusterflow_bench_{os.getpid()}"
    admin_url = base.database_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(admin(admin_url, drop, f'CREATE DATABASE "{name}"'))
    settings = base.model_copy(update={"database_url": base.database_url.rsplit("/", 1)[0] + "/" + name,
                                       "topic_prefix": f"{name}."})
    stack = Stack(settings=settings, log_dir=Path(tempfile.mkdtemp(prefix="bench-logs-")))
    try:
        migrate(settings.database_url)
        app = os.environ.get("CLUSTERFLOW_BENCH_APP", "services.gateway.app:app")  # to try variants
        stack.argv["gateway"] = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
                                 "--port", str(stack.port), "--log-level", "warning"] + (
                                     ["--workers", str(args.workers)] if args.workers > 1 else [])
        stack.spawn("gateway")
        stack.wait_ready(60)
        key = create_key(settings.database_url, ["bench"], name="bench")
        headers = {"Authorization": f"Bearer {key}", "X-Namespace": "bench"}
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:
            r = http.post("/v1/collections", json={"collection_name": "bench", "embeddings": {"v": 8}})
            r.raise_for_status()
            collection_id = r.json()["collection_id"]
            docs = [{"document_id": f"d{i}", "payload": {"i": i}, "embeddings": {"v": [float(i % 7)] * 8}}
                    for i in range(200)]
            http.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs}).raise_for_status()
            r = http.post("/v1/clusters", json={"collection_ids": [collection_id], "cluster_name": "bench",
                                                "clustering_method": "kmeans", "algorithm_params": {"n_clusters": 4},
                                                "defer_visualization": True})
            r.raise_for_status()
            path = f"/v1/clusters/{r.json()['cluster_id']}/execute"
            if args.target == "task":
                path = f"/v1/tasks/{http.post(path).json()['task_id']}"
            elif args.target == "health":
                path = "/health"
        method = "POST" if args.target == "execute" else "GET"

        if args.warmup > 0:
            asyncio.run(load(stack.port, headers, method, path, args.rate, args.warmup))
        import psutil

        gateway = psutil.Process(stack.processes["gateway"].pid)
        family = [gateway, *gateway.children(recursive=True)]
        me = psutil.Process()
        spy = subprocess.Popen(["py-spy", "record", "-p", str(gateway.pid), "-d", str(int(args.seconds)), "-r", "100",
                                "--format", "raw", "-o", args.profile], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) if args.profile else None
        cpu_gateway, cpu_me = sum(sum(p.cpu_times()[:2]) for p in family), sum(me.cpu_times()[:2])
        latencies, errors, elapsed, late_p99 = asyncio.run(load(stack.port, headers, method, path, args.rate, args.seconds))
        cpu_gateway = sum(sum(p.cpu_times()[:2]) for p in family) - cpu_gateway
        cpu_me = sum(me.cpu_times()[:2]) - cpu_me
        if spy is not None:
            spy.wait()
        n = len(latencies)
        print(f"{method} {path}, open loop at {args.rate:.0f}/s for {args.seconds:.0f}s "
              f"(after {args.warmup:.0f}s of warm-up), {args.workers} gateway process(es), {os.cpu_count()} cores")
        print(f"  requests {n}, errors {errors}, achieved {n / elapsed:.1f}/s (sends p99 {late_p99:.1f} ms late)")
        print(f"  latency ms: p50 {percentile(latencies, 50):.1f}  p95 {percentile(latencies, 95):.1f}  "
              f"p99 {percentile(latencies, 99):.1f}  max {max(latencies):.1f}  mean {statistics.fmean(latencies):.1f}")
        print(f"  cpu: gateway {cpu_gateway / elapsed:.0%} of a core ({cpu_gateway / n * 1000:.2f} ms a request), "
              f"load generator {cpu_me / elapsed:.0%}")
        target = percentile(latencies, 99) <= 50
        print(f"  target p99 <= 50 ms: {'met' if target else 'NOT met'}")
        print(json.dumps({"method": method, "path": path, "rate": args.rate, "requests": n, "errors": errors,
                          "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
                          "p99_ms": round(percentile(latencies, 99), 2), "max_ms": round(max(latencies), 2),
                          "gateway_cpu_ms_per_request": round(cpu_gateway / n * 1000, 3)}, sort_keys=True))
        return 0 if errors == 0 else 1
    finally:
        stack.stop()
        try:
            asyncio.run(delete_topics(settings))
        finally:
            asyncio.run(admin(admin_url, drop))


if __name__ == "__main__":
    raise SystemExit(main())
