"""API keys and namespaces through the real gateway: 401 without a valid key, 403 for a
namespace the key does not cover, 404 (never 403) for another namespace's resources,
and two namespaces using the same names that never see each other's collections,
clusters, runs, tasks, artifacts or events."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from clusterflow.keys import create_key
from clusterflow.messaging import KafkaPublisher, make_broker
from contracts.events import ExecutionRequested, new_run_id, new_task_id
from contracts.topics import EXECUTION_CLUSTERED, EXECUTION_REQUESTED
from tests.e2e.conftest import wait_for_task
from tests.support.corpus import make_cluster, make_collection, start_run
from tests.support.kafka import read_topic

pytestmark = pytest.mark.e2e

A, B, C = "tenant-a", "tenant-b", "tenant-c"


@pytest.fixture(scope="module")
def keys(settings, stack):
    url = settings.database_url
    return {"a": create_key(url, [A], name="a"), "b": create_key(url, [B], name="b"),
            "ab": create_key(url, [A, B], name="a and b"), "all": create_key(url, ["*"], name="admin")}


def client(stack, key: str | None, namespace: str | None = None) -> httpx.Client:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if namespace is not None:
        headers["X-Namespace"] = namespace
    return httpx.Client(base_url=stack.url, headers=headers, timeout=30)


def assert_error(r: httpx.Response, status: int, type_: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["status"] == status and body["error"]["type"] == type_, body
    assert body["error"]["message"]
    return body["error"]


def test_without_a_valid_key_every_call_is_a_401(stack, keys):
    bad = [None, "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz", keys["a"],  # (no scheme)
           "Bearer cfk_000000000000_" + "A" * 43,
           "Bearer " + keys["a"][:-4] + "AAAA"]  # the right key id, the wrong secret
    with client(stack, None, A) as anonymous:
        for authorization in bad:
            headers = {"Authorization": authorization} if authorization else {}
            for method, path in (("GET", "/v1/collections"), ("POST", "/v1/clusters/clust_x/execute"),
                                 ("GET", "/v1/tasks/task_x"), ("POST", "/v1/clusters/list")):
                error = assert_error(anonymous.request(method, path, headers=headers), 401, "UnauthorizedError")
                assert error["code"] in ("missing_api_key", "invalid_authorization", "invalid_api_key")
        # A key is never echoed back.
        r = anonymous.get("/v1/collections", headers={"Authorization": f"Bearer {keys['a'][:-4]}AAAA"})
        assert keys["a"][:-4] not in r.text
        # The operations endpoints stay open.
        assert anonymous.get("/health").status_code == 200
        r = anonymous.get("/ready")
        assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_every_api_route_needs_a_key(stack):
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    open_paths = {"/health", "/ready", "/v1/clusters/{cluster_id}/executions/{run_id}/view"}
    checked = 0
    with client(stack, None, A) as anonymous:
        for path, operations in spec["paths"].items():
            if path in open_paths:
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            for method in operations:
                r = anonymous.request(method.upper(), concrete, json={} if method in ("post", "patch") else None)
                assert r.status_code == 401, f"{method.upper()} {path}: {r.status_code} {r.text[:200]}"
                checked += 1
    assert checked >= 15
    # The viewer page is a static file (no data): it stays open; its data calls do not.
    assert httpx.get(f"{stack.url}/v1/clusters/x/executions/y/view").status_code == 200


def test_a_namespace_the_key_does_not_cover_is_a_403(stack, keys):
    with client(stack, keys["a"], B) as c:
        error = assert_error(c.get("/v1/collections"), 403, "ForbiddenError")
        assert error["code"] == "namespace_forbidden" and error["details"]["namespace"] == B
        assert_error(c.post("/v1/clusters/clust_x/execute"), 403, "ForbiddenError")
    with client(stack, keys["ab"], C) as c:
        assert_error(c.get("/v1/collections"), 403, "ForbiddenError")
    for key, namespace in (("ab", A), ("ab", B), ("all", C), ("all", "anything.else")):
        with client(stack, keys[key], namespace) as c:
            assert c.get("/v1/collections").status_code == 200
    # A key with one namespace may leave X-Namespace out; a wider key gets "default".
    with client(stack, keys["a"]) as c:
        assert c.get("/v1/collections").status_code == 200
    with client(stack, keys["ab"]) as c:
        assert_error(c.get("/v1/collections"), 403, "ForbiddenError")
    with client(stack, keys["a"], "bad namespace!") as c:
        assert_error(c.get("/v1/collections"), 400, "BadRequestError")


def test_two_namespaces_with_the_same_names_never_see_each_other(stack, keys, settings):
    with client(stack, keys["a"], A) as a, client(stack, keys["b"], B) as b:
        col_a = make_collection(a, name="shared-name", seed=1, per_group=30)
        col_b = make_collection(b, name="shared-name", seed=2, per_group=20)
        assert col_a != col_b
        cl_a = make_cluster(a, col_a, cluster_name="shared-cluster", defer_visualization=True)
        cl_b = make_cluster(b, col_b, cluster_name="shared-cluster", defer_visualization=True)
        task_a = start_run(a, cl_a)
        run_a = task_a["additional_data"]["run_id"]
        assert task_a["additional_data"]["namespace_id"] == A
        done = wait_for_task(a, task_a["task_id"], stack=stack)
        assert done["status"] == "COMPLETED", done

        # By name, each namespace finds its own.
        assert a.get("/v1/collections/shared-name").json()["collection_id"] == col_a
        assert b.get("/v1/collections/shared-name").json()["collection_id"] == col_b
        assert a.get("/v1/collections/shared-name").json()["document_count"] == 120
        assert b.get("/v1/collections/shared-name").json()["document_count"] == 80
        assert a.get("/v1/clusters/shared-cluster").json()["cluster_id"] == cl_a
        assert b.get("/v1/clusters/shared-cluster").json()["cluster_id"] == cl_b
        assert [c["collection_id"] for c in b.get("/v1/collections").json()["results"]] == [col_b]
        listed = b.post("/v1/clusters/list", json={}).json()
        assert [c["cluster_id"] for c in listed["results"]] == [cl_b]

        # A's resources from B: 404, exactly like resources that do not exist.
        for method, path, body in (
            ("GET", f"/v1/collections/{col_a}", None),
            ("GET", f"/v1/collections/{col_a}/documents", None),
            ("GET", f"/v1/collections/{col_a}/documents/doc_00001", None),
            ("GET", f"/v1/clusters/{cl_a}", None),
            ("POST", f"/v1/clusters/{cl_a}/execute", None),
            ("GET", f"/v1/clusters/{cl_a}/executions", None),
            ("GET", f"/v1/clusters/{cl_a}/executions/{run_a}", None),
            ("GET", f"/v1/clusters/{cl_b}/executions/{run_a}", None),
            ("POST", f"/v1/clusters/{cl_a}/executions/{run_a}/data", {}),
            ("POST", f"/v1/clusters/{cl_a}/executions/{run_a}/cancel", None),
            ("GET", f"/v1/clusters/{cl_a}/executions/{run_a}/points", None),
            ("GET", f"/v1/tasks/{task_a['task_id']}", None),
            ("DELETE", f"/v1/tasks/{task_a['task_id']}", None),
            ("PATCH", f"/v1/clusters/{cl_a}", {"description": "taken over"}),
            ("DELETE", f"/v1/clusters/{cl_a}", None),
            ("DELETE", f"/v1/collections/{col_a}/documents/doc_00001", None),
            ("DELETE", f"/v1/collections/{col_a}", None),
        ):
            r = b.request(method, path, json=body)
            assert_error(r, 404, "NotFoundError")
        # ... and A's are all still there, unchanged.
        assert a.get(f"/v1/clusters/{cl_a}").json()["description"] is None
        assert a.get(f"/v1/collections/{col_a}").json()["document_count"] == 120
        assert a.get(f"/v1/tasks/{task_a['task_id']}").json()["status"] == "COMPLETED"

    # Artifacts live under the namespace's prefix, and the run's events carry it.
    execution = [r for r in read_topic(settings, EXECUTION_CLUSTERED.name) if run_a.encode() in r.value]
    assert execution and all(f'"namespace":"{A}"'.encode() in r.value for r in execution)
    assert all(f'"members_key":"{A}/{cl_a}/{run_a}/'.encode() in r.value for r in execution)


def test_an_event_naming_another_namespace_cannot_reach_its_cluster(stack, keys, settings):
    """Anyone may publish ExecutionRequested to Kafka, but the namespace it names is the
    one the run works in: another namespace's cluster is simply not found there."""
    with client(stack, keys["a"], A) as a, client(stack, keys["b"], B) as b:
        col_a = make_collection(a, seed=4, per_group=10)
        cl_a = make_cluster(a, col_a, defer_visualization=True)
        run_id, task_id = new_run_id(), new_task_id()

        async def publish() -> None:
            broker = make_broker(settings, client_id="e2e-intruder")
            await broker.connect()
            try:
                await KafkaPublisher(broker, settings.topic_prefix).publish(EXECUTION_REQUESTED, ExecutionRequested(
                    namespace=B, run_id=run_id, cluster_id=cl_a, task_id=task_id))
            finally:
                await broker.stop()

        asyncio.run(publish())
        done = wait_for_task(b, task_id, stack=stack, unknown_for=30)
        assert done["status"] == "FAILED" and "does not exist in namespace" in done["error"], done
        assert_error(a.get(f"/v1/tasks/{task_id}"), 404, "NotFoundError")
        assert_error(a.get(f"/v1/clusters/{cl_a}/executions/{run_id}"), 404, "NotFoundError")
        assert a.get(f"/v1/clusters/{cl_a}").status_code == 200


def keys_cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLUSTERFLOW_DATABASE_URL": settings.database_url}
    return subprocess.run([sys.executable, "-m", "clusterflow.keys", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_the_keys_command_creates_lists_and_revokes(stack, settings):
    created = keys_cli(settings, "create", "--namespace", C, "--name", "ops")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"cfk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    key_id = key.split("_")[1]
    assert "not shown again" in created.stderr

    listing = keys_cli(settings, "list")
    assert listing.returncode == 0 and key_id in listing.stdout and key not in listing.stdout
    line = next(line for line in listing.stdout.splitlines() if line.startswith(key_id))
    assert f"\t{C}\tactive\t" in line and line.endswith("ops")

    with client(stack, key, C) as c:
        assert c.get("/v1/collections").status_code == 200
        assert keys_cli(settings, "revoke", key_id).returncode == 0
        # The gateway remembers a verified key for auth_cache_seconds (5 s by default).
        deadline = time.monotonic() + settings.auth_cache_seconds + 10
        while c.get("/v1/collections").status_code == 200:
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.5)
        assert_error(c.get("/v1/collections"), 401, "UnauthorizedError")
    assert "revoked" in next(line for line in keys_cli(settings, "list").stdout.splitlines()
                             if line.startswith(key_id))
    assert keys_cli(settings, "revoke", key_id).returncode == 1
    bad = keys_cli(settings, "create", "--namespace", "no spaces")
    assert bad.returncode == 2 and "invalid namespace" in bad.stderr
