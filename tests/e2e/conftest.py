"""The whole system on loopback: the five services as processes, real servers behind."""
from __future__ import annotations

import time

import httpx
import pytest

# `llm` and `stack` (the five services on the real servers) live in tests/conftest.py:
# the SDK tier (tests/sdk) runs against the same stack in the same session.
from tests.conftest import start_stack  # noqa: F401  (for modules that start a stack of their own)

TERMINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"}


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
