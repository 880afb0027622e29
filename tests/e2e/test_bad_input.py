"""Bad input through the real gateway: schemathesis finds no 500 and no response outside
the documented shapes; SQL fragments in filters change nothing; oversized bodies and
documents are refused with 413 before being read whole."""
from __future__ import annotations

import io
import json
import socket
import time
from collections import Counter

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clusterflow.keys import create_key
from tests.e2e.conftest import wait_for_task
from tests.support.corpus import make_cluster, make_collection, start_run

pytestmark = pytest.mark.e2e

# Examples per operation and generation mode, in two passes: path ids generated (mostly
# unknown: 404s), then the ids of real resources (bodies and queries against a real
# collection, cluster, run and task; DELETE excepted). About 3,000 calls, under a minute.
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _parquet(n: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"document_id": [f"f{i}" for i in range(n)], "v": [[0.5] * 8] * n}), buf)
    return buf.getvalue()


# The bulk import's upload body: random bytes (not parquet: 400), a truncated file, and
# real files with and without the expected columns.
schemathesis.openapi.media_type("application/vnd.apache.parquet", st.one_of(
    st.binary(max_size=64), st.sampled_from([_parquet(3), _parquet(3)[:-9], b"PAR1" + b"\0" * 8 + b"PAR1"])))


def test_schemathesis_finds_no_500_and_no_undocumented_response(stack, settings):
    key = create_key(settings.database_url, ["fuzz"], name="schemathesis")
    headers = {"Authorization": f"Bearer {key}", "X-Namespace": "fuzz"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as fuzz:
        collection_id = make_collection(fuzz, per_group=10, seed=81, name="fuzz-docs")
        cluster_id = make_cluster(fuzz, collection_id, defer_visualization=True, cluster_name="fuzz-cluster")
        task = start_run(fuzz, cluster_id)
        wait_for_task(fuzz, task["task_id"], stack=stack)
    real = {"collection_id": collection_id, "cluster_id": cluster_id, "run_id": task["additional_data"]["run_id"],
            "task_id": task["task_id"], "document_id": "doc_00001"}

    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    failures: list[str] = []
    statuses: Counter = Counter()
    tried = Counter()
    no_negative: set[str] = set()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        passes = [{}]
        if names and operation.method.upper() != "DELETE":  # deleting the real ones ends the pass early
            passes.append({k: v for k, v in real.items() if k in names})
        for ids in passes:
            for mode, examples in EXAMPLES.items():
                strategy = operation.as_strategy(generation_mode=mode, headers=headers,
                                                 path_parameters=ids or None)

                @hypothesis_settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                                     phases=[Phase.explicit, Phase.generate],
                                     suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def check(case) -> None:
                    tried[mode] += 1
                    response = case.call(headers=headers, timeout=30)
                    statuses[response.status_code] += 1
                    try:
                        case.validate_response(response, checks=CHECKS)
                    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected: all are tried
                        if len(failures) < 30:
                            failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}\n"
                                            f"  {case.as_curl_command()[:1000]}")

                try:
                    check()
                except Unsatisfiable:
                    # No invalid input exists for it (no parameters, no body): nothing to try.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                    no_negative.add(operation.label)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {sum(tried.values())} calls ({tried[GenerationMode.POSITIVE]} valid, "
          f"{tried[GenerationMode.NEGATIVE]} invalid) in {elapsed:.0f}s; statuses "
          f"{dict(sorted(statuses.items()))}; no invalid input possible for {sorted(no_negative)}")
    assert not failures, "\n\n".join(failures)
    assert statuses[500] == 0
    assert sum(tried.values()) >= 2000


def test_sql_fragments_in_filters_change_nothing(api, stack):
    collection_id = make_collection(api, per_group=25, seed=61)
    before = api.get(f"/v1/collections/{collection_id}").json()
    fragments = ["x' OR '1'='1", "'; DROP TABLE documents; --", "1); DELETE FROM documents; --",
                 "%", "_", "\\", "$1", "' UNION SELECT payload FROM documents --"]
    cluster_id = make_cluster(api, collection_id, defer_visualization=True, params={"n_clusters": 2})

    # As values (compared as data, they match nothing: no title holds them; LIKE
    # wildcards are literal) and as field names (paths no document has). Either the
    # gateway refuses the filter (400) or the run finds no document.
    runs = []
    for fragment in fragments:
        for condition in ({"field": "title", "operator": "eq", "value": fragment},
                          {"field": "title", "operator": "contains", "value": fragment},
                          {"field": "title", "operator": "starts_with", "value": fragment},
                          {"field": fragment, "operator": "eq", "value": 1}):
            r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"filters": {"AND": [condition]}})
            assert r.status_code in (200, 400), r.text
            if r.status_code == 200:
                runs.append((condition, r.json()["task_id"]))
    assert len(runs) >= 3 * len(fragments)
    for condition, task_id in runs:
        done = wait_for_task(api, task_id, stack=stack)
        assert done["status"] == "FAILED" and "no documents match" in done["error"], (condition, done)

    # The other places a client's string reaches SQL: search, list filters, ids and names.
    for fragment in fragments:
        listed = api.post("/v1/clusters/list", json={"search": fragment}).json()
        assert all(fragment in c["cluster_name"] for c in listed["results"]), listed
        assert api.post("/v1/clusters/list", json={"filters": {"cluster_name": fragment}}).json()["total_count"] == 0
        assert api.get(f"/v1/collections/{fragment}").status_code in (400, 404)
        assert api.get(f"/v1/tasks/{fragment}").status_code in (400, 404)
        assert api.get(f"/v1/clusters/{fragment}").status_code in (400, 404)
    after = api.get(f"/v1/collections/{collection_id}").json()
    assert after["document_count"] == before["document_count"] == 100
    page = api.get(f"/v1/collections/{collection_id}/documents", params={"limit": 1}).json()
    assert page["pagination"]["total"] == 100
    # ... and the same cluster still clusters all of them.
    done = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "COMPLETED" and done["additional_data"]["sampling"]["matched"] == 100, done


def raw_request(stack, head: bytes, chunks=(), read_timeout: float = 30) -> tuple[int, dict, int]:
    """Send a request over a plain socket; returns (status, JSON body, bytes of body sent).
    Stops sending as soon as the server answers (or closes)."""
    host, port = "127.0.0.1", stack.port
    sent = 0
    with socket.create_connection((host, port), timeout=read_timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        response = b""
        for chunk in chunks:
            try:
                response += sock.recv(65536)
                if response:
                    break
            except BlockingIOError:
                pass
            try:
                sock.setblocking(True)
                sock.sendall(chunk)
                sent += len(chunk)
                sock.setblocking(False)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        sock.settimeout(read_timeout)
        try:
            while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < _length(response):
                data = sock.recv(65536)
                if not data:
                    break
                response += data
        except (ConnectionResetError, socket.timeout):
            pass
    head_part, _, body = response.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, json.loads(body[:_length(response)] or b"null"), sent


def _length(response: bytes) -> int:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 0


def test_oversized_bodies_and_documents_are_refused_with_413(api, stack, settings):
    collection_id = make_collection(api, per_group=5, seed=71)
    limit = settings.max_body_bytes
    auth = f"Authorization: {api.headers['Authorization']}\r\nX-Namespace: e2e\r\n".encode()
    path = f"/v1/collections/{collection_id}/documents".encode()

    # A Content-Length over the limit: refused at once, nothing of the body is read.
    started = time.monotonic()
    status, body, _ = raw_request(stack, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth +
                                  b"Content-Type: application/json\r\nContent-Length: " +
                                  str(limit * 16).encode() + b"\r\n\r\n")
    assert status == 413 and time.monotonic() - started < 5
    assert body["success"] is False and body["error"]["type"] == "PayloadTooLargeError"
    assert body["error"]["code"] == "body_too_large" and body["error"]["details"]["limit_bytes"] == limit

    # A chunked body (no Content-Length): counted as it streams, refused past the limit.
    chunk = b"[" + b" " * (1024 * 1024 - 2) + b","

    def chunks():
        for _ in range(limit // len(chunk) + 64):
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    status, body, sent = raw_request(stack, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + auth +
                                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                                     chunks())
    assert status == 413, body
    assert body["error"]["type"] == "PayloadTooLargeError"
    assert sent < limit + 32 * 1024 * 1024, f"the gateway read {sent} bytes before refusing"

    # One document whose payload is over the per-document limit.
    big = {"document_id": "big", "payload": {"text": "x" * (settings.max_document_payload_bytes + 10)},
           "embeddings": {"v": [0.0] * 8}}
    small = {"document_id": "small", "payload": {"text": "fine"}, "embeddings": {"v": [0.1] * 8}}
    r = api.post(f"/v1/collections/{collection_id}/documents", json={"documents": [small, big]})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "document_too_large" and error["details"]["document_id"] == "big"
    assert error["details"]["index"] == 1
    # Nothing of the refused batch was stored; the collection still works.
    assert api.get(f"/v1/collections/{collection_id}/documents/small").status_code == 404
    assert api.get(f"/v1/collections/{collection_id}").json()["document_count"] == 20
    assert api.post(f"/v1/collections/{collection_id}/documents", json={"documents": [small]}).status_code == 200
