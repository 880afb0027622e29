"""Readiness probes used by deploy/local/servers.sh (not part of the application).

    probe.py kafka BOOTSTRAP [--timeout S] [--pid PID]
    probe.py s3 ENDPOINT [--timeout S] [--pid PID] [--write]
    probe.py ray DASHBOARD_ADDRESS [--timeout S] [--pid PID] [--nodes N]

Each probe retries until it succeeds or --timeout seconds have passed, and gives up at
once if --pid is given and that process has died. Exit status: 0 ready, 1 not ready
before the timeout, 3 the watched process died. The last error goes to stderr.

Kafka: an admin client connects and lists the topics (a real metadata round trip, not
just an open port). S3: the bucket exists (it is created when missing); with --write an
object is also put, read back, compared and deleted. Ray: the dashboard's state API
(`/api/v0/nodes`, what `ray list nodes` reads) lists at least --nodes nodes ALIVE; it
reads the GCS without joining the cluster as a driver, so a probe costs no worker.
S3 credentials and bucket come from CLUSTERFLOW_S3_ACCESS_KEY, CLUSTERFLOW_S3_SECRET_KEY
and CLUSTERFLOW_S3_BUCKET. Debugging aid: CLUSTERFLOW_PROBE_LOG=<file> appends every
failed try to that file.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import sys
import time


def _alive(pid: int | None) -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _retry(check, timeout: float, pid: int | None, attempt_max: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        if not _alive(pid):
            print(f"process {pid} exited", file=sys.stderr)
            return 3
        try:
            check(max(1.0, min(attempt_max, deadline - time.monotonic())))
            return 0
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = f"{type(exc).__name__}: {exc}".strip()
            if os.environ.get("CLUSTERFLOW_PROBE_LOG"):  # debugging aid: every failed try
                with open(os.environ["CLUSTERFLOW_PROBE_LOG"], "a") as fh:
                    fh.write(f"{time.monotonic() - deadline + timeout:.2f}s {last[:300]}\n")
        if time.monotonic() >= deadline:
            print(last[:500], file=sys.stderr)
            return 1
        time.sleep(0.5)


def kafka_check(bootstrap: str):
    from aiokafka.admin import AIOKafkaAdminClient

    async def once(budget: float) -> None:
        client = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="clusterflow-probe",
            request_timeout_ms=int(budget * 1000),
        )
        try:
            await asyncio.wait_for(client.start(), budget)
            await asyncio.wait_for(client.list_topics(), budget)
        finally:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:  # noqa: BLE001
                pass

    return lambda budget: asyncio.run(once(budget))


def s3_check(endpoint: str, write: bool):
    import urllib3
    from minio import Minio

    bucket = os.environ.get("CLUSTERFLOW_S3_BUCKET", "clusterflow")

    def once(budget: float) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(budget, 3.0), read=budget), retries=False
        )
        client = Minio(
            endpoint=endpoint,
            access_key=os.environ.get("CLUSTERFLOW_S3_ACCESS_KEY", "clusterflow"),
            secret_key=os.environ.get("CLUSTERFLOW_S3_SECRET_KEY", "clusterflow-secret"),
            secure=False,
            region="us-east-1",
            http_client=http,
        )
        try:
            if not client.bucket_exists(bucket_name=bucket):
                if not write:
                    raise RuntimeError(f"bucket {bucket!r} does not exist")
                client.make_bucket(bucket_name=bucket)
            if write:
                name = f"_probe/{os.getpid()}-{time.time_ns()}"
                payload = b"clusterflow probe"
                client.put_object(
                    bucket_name=bucket, object_name=name,
                    data=io.BytesIO(payload), length=len(payload),
                )
                resp = client.get_object(bucket_name=bucket, object_name=name)
                try:
                    got = resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
                client.remove_object(bucket_name=bucket, object_name=name)
                if got != payload:
                    raise RuntimeError("object read back differs from what was written")
        finally:
            http.clear()

    return once


def ray_check(address: str, nodes: int):
    import json
    import urllib.request

    def once(budget: float) -> None:
        with urllib.request.urlopen(f"http://{address}/api/v0/nodes?limit=100&detail=false",
                                    timeout=budget) as resp:
            body = json.loads(resp.read())
        listed = body["data"]["result"]["result"]
        alive = [n for n in listed if n.get("state") == "ALIVE"]
        if len(alive) < nodes:
            raise RuntimeError(f"{len(alive)} of {nodes} Ray nodes alive "
                               f"({', '.join(n.get('state', '?') for n in listed) or 'none listed'})")

    return once


def main() -> int:
    logging.disable(logging.CRITICAL)  # aiokafka logs every refused connection
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["kafka", "s3", "ray"])
    parser.add_argument("address")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--pid", type=int, default=0)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args()
    if args.kind == "kafka":
        check = kafka_check(args.address)
    elif args.kind == "ray":
        check = ray_check(args.address, args.nodes)
    else:
        check = s3_check(args.address, args.write)
    # A request to a server that is still starting may hang; retry soon with a new one.
    return _retry(check, args.timeout, args.pid or None, 10.0 if args.kind == "kafka" else 5.0)


if __name__ == "__main__":
    sys.exit(main())
