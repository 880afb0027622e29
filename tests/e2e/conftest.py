"""The whole system on loopback: the five services as processes, real servers behind."""
from __future__ import annotations

import time

import httpx
import pytest

from clusterflow.keys import create_key
from clusterflow.stack import Stack
from services.clusterer.app import WARM_UP_DONE
from tests.support.llm_servers import API_KEY, LLMServer

TERMINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"}


@pytest.fixture(scope="session")
def llm():
    """Our own HTTP server speaking the OpenAI, Gemini and Anthropic protocols."""
    with LLMServer() as server:
        yield server


def start_stack(settings, log_dir, namespace: str, env: dict | None = None) -> Stack:
    """The five services started (failing the test loudly if they cannot), with an API
    key for `namespace` as `api_key` (authentication is on, the default)."""
    s = Stack(settings=settings, log_dir=log_dir, env=env or {})
    try:
        s.start()
        if settings.clusterer_warm_up:
            # The clusterer compiles UMAP's numba code at start; the tests begin once it has
            # (a run meanwhile would wait for it, and time-bound tests would share the CPU).
            s.wait_for_log("services.clusterer", WARM_UP_DONE, timeout=300)
    except RuntimeError as exc:
        s.stop()
        pytest.fail(str(exc), pytrace=False)
    s.api_key = create_key(settings.database_url, [namespace], name=f"{namespace} tests")
    return s


@pytest.fixture(scope="session")
def stack(settings, tmp_path_factory, llm):
    providers = {f"CLUSTERFLOW_{p}_{k}": v for p in ("OPENAI", "GOOGLE", "ANTHROPIC")
                 for k, v in (("BASE_URL", llm.base_url), ("API_KEY", API_KEY))}
    s = start_stack(settings, tmp_path_factory.mktemp("service-logs"), "e2e", providers)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def api(stack):
    headers = {"X-Namespace": "e2e", "Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.url, timeout=30, headers=headers) as client:
        yield client


def wait_for_task(api: httpx.Client, task_id: str, timeout: float = 180, stack=None,
                  unknown_for: float = 0.0) -> dict:
    """Poll a task to its end. `unknown_for`: seconds it may still be 404 (a run published
    straight to Kafka is known once the projector has read it)."""
    start = time.monotonic()
    deadline = start + timeout
    seen = None
    while time.monotonic() < deadline:
        r = api.get(f"/v1/tasks/{task_id}")
        if r.status_code == 404 and time.monotonic() - start < unknown_for:
            time.sleep(0.3)
            continue
        assert r.status_code == 200, r.text
        seen = r.json()
        if seen["status"] in TERMINAL:
            return seen
        time.sleep(0.5)
    logs = stack.log_tails() if stack else ""
    raise AssertionError(f"task {task_id} still {seen and seen['status']} after {timeout}s: {seen}\n{logs}")
