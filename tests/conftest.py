"""Fixtures shared by the integration and e2e tiers: the real servers.

`servers` runs the project's own `deploy/local/servers.sh start` (idempotent: it reuses
what already runs) and fails the session loudly when a server cannot start; no test
is ever skipped for want of a server. Each session gets a fresh database, migrated
with Alembic, so every run also proves the migrations from scratch.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from clusterflow.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "deploy" / "local" / "servers.sh"


def _start_servers() -> dict[str, str]:
    done = subprocess.run(["bash", str(SERVERS), "start"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        pytest.fail(f"the real servers did not start (servers.sh start exited {done.returncode}):\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}", pytrace=False)
    env = subprocess.run(["bash", str(SERVERS), "env"], cwd=ROOT, capture_output=True, text=True, check=True)
    values = {}
    for line in env.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            values[key] = value.strip().strip("'\"")
    return values


async def _admin(admin_url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_env() -> dict[str, str]:
    return _start_servers()


@pytest.fixture(scope="session")
def settings(server_env: dict[str, str], tmp_path_factory) -> Settings:
    """Settings for this session: the real servers, a fresh migrated database."""
    from clusterflow.db import migrate

    base = Settings(**{k[len("CLUSTERFLOW_"):].lower(): v for k, v in server_env.items()
                       if k.startswith("CLUSTERFLOW_")})
    db_name = f"clusterflow_test_{os.getpid()}"
    admin_url = base.database_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    drop = f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'
    asyncio.run(_admin(admin_url, drop, f'CREATE DATABASE "{db_name}"'))
    url = base.database_url.rsplit("/", 1)[0] + "/" + db_name
    migrate(url)
    # Topics of its own, and segment caches of its own (a test counts what they fetch).
    settings = base.model_copy(update={"database_url": url, "topic_prefix": f"{db_name}.",
                                       "segment_cache_dir": str(tmp_path_factory.mktemp("segment-cache"))})
    yield settings
    asyncio.run(_admin(admin_url, drop))


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def llm():
    """Our own HTTP server speaking the OpenAI, Gemini and Anthropic protocols."""
    from tests.support.llm_servers import LLMServer

    with LLMServer() as server:
        yield server


def start_stack(settings, log_dir, namespace: str, env: dict | None = None):
    """The five services started (failing the test loudly if they cannot), with an API
    key for `namespace` as `api_key` (authentication is on, the default)."""
    from clusterflow.keys import create_key
    from clusterflow.stack import Stack
    from services.clusterer.app import WARM_UP_DONE

    s = Stack(settings=settings, log_dir=log_dir, env=env or {})
    try:
        s.start()
        if settings.clusterer_warm_up:
            # The clusterer compiles UMAP's numba code at start; the tests begin once it has
            # (a run meanwhile would wait for it, and time-bound tests would share the CPU).
            # CLUSTERFLOW_TEST_WARM_UP_S: more than 300 s on a box shared past its cores.
            s.wait_for_log("services.clusterer", WARM_UP_DONE,
                           timeout=float(os.environ.get("CLUSTERFLOW_TEST_WARM_UP_S", "300")))
    except RuntimeError as exc:
        s.stop()
        pytest.fail(str(exc), pytrace=False)
    s.api_key = create_key(settings.database_url, [namespace], name=f"{namespace} tests")
    return s


@pytest.fixture(scope="session")
def stack(settings, tmp_path_factory, llm):
    """The five services as processes on the real servers (the e2e and SDK tiers), with
    the tests' key for the namespace "e2e"."""
    from tests.support.llm_servers import API_KEY

    providers = {f"CLUSTERFLOW_{p}_{k}": v for p in ("OPENAI", "GOOGLE", "ANTHROPIC")
                 for k, v in (("BASE_URL", llm.base_url), ("API_KEY", API_KEY))}
    s = start_stack(settings, tmp_path_factory.mktemp("service-logs"), "e2e", providers)
    yield s
    s.stop()
