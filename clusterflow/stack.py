"""Start the five services as local processes against running servers.

Used by the main job (`scripts/demo.sh`), by the e2e tests and by the benchmark: the
same processes a deployment runs, on loopback.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clusterflow.settings import Settings

WORKERS = ("services.preparer", "services.clusterer", "services.labeler", "services.status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_env(settings: Settings) -> dict[str, str]:
    return {f"CLUSTERFLOW_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None}


def wait_until_ok(url: str, timeout: float, failed: Callable[[], str | None]) -> bool:
    """Polls GET url until it answers 200 (True) or `timeout` passes (False); raises
    RuntimeError with failed()'s message as soon as it returns one (a process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (problem := failed()) is not None:
            raise RuntimeError(problem)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


@dataclass
class Stack:
    settings: Settings
    log_dir: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # extra variables, e.g. LLM provider URLs
    # Each worker's /metrics, /health and /ready port (CLUSTERFLOW_METRICS_PORT), free ones.
    metrics_ports: dict[str, int] = field(default_factory=lambda: {m: free_port() for m in WORKERS})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """{service: its /metrics URL}, the gateway's included ("preparer", "gateway"...)."""
        urls = {m.rsplit(".", 1)[-1]: f"http://127.0.0.1:{p}/metrics" for m, p in self.metrics_ports.items()}
        return {**urls, "gateway": f"{self.url}/metrics"}

    def start(self, timeout: float = 60.0) -> "Stack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for module in WORKERS:
            self.argv[module] = [sys.executable, "-m", module]
        self.argv["gateway"] = [sys.executable, "-m", "uvicorn", "services.gateway.app:app",
                                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        for name in self.argv:
            self.spawn(name)
        self.wait_ready(timeout)
        return self

    def spawn(self, name: str) -> None:
        env = {**os.environ, **settings_env(self.settings), **self.env, "PYTHONUNBUFFERED": "1"}
        if name in self.metrics_ports:
            env.update(CLUSTERFLOW_METRICS_PORT=str(self.metrics_ports[name]), CLUSTERFLOW_METRICS_HOST="127.0.0.1")
        log = open(self.log_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(self.argv[name], env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        def exited() -> str | None:
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            return f"services exited during start: {dead}\n{self.log_tails()}" if dead else None

        if not wait_until_ok(f"{self.url}/health", timeout, exited):
            raise RuntimeError(f"the gateway did not answer within {timeout:.0f}s\n{self.log_tails()}")

    def wait_for_log(self, name: str, text: str, timeout: float) -> None:
        """Until `text` shows in the service's log (the clusterer's "numba warm-up done")."""
        path, deadline = self.log_dir / f"{name}.log", time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in path.read_text(errors="replace"):
                return
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited before logging {text!r}\n{self.log_tails()}")
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not log {text!r} within {timeout:.0f}s\n{self.log_tails()}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.processes[name]
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def log_tails(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(out)


@contextmanager
def local_services(log_dir: Path, namespace: str) -> Iterator[tuple[str, str | None]]:
    """The five services over the running servers (the environment's settings), on a
    migrated database, with an API key for `namespace` made straight in the database
    (what `python -m clusterflow.keys create` does) when the gateway requires one.
    Yields (the gateway's URL, the key); stops the services on exit."""
    from clusterflow.db import migrate
    from clusterflow.keys import create_key
    from clusterflow.settings import get_settings

    settings = get_settings()
    migrate(settings.database_url)
    stack = Stack(settings=settings, log_dir=log_dir)
    stack.start()
    try:
        api_key = create_key(settings.database_url, [namespace], name=namespace) if settings.auth_required else None
        yield stack.url, api_key
    finally:
        stack.stop()
