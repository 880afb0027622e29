"""`clusterflow up` / `down` as a user runs them: a subprocess that starts the system,
serves a whole ingest -> execute -> results round through the CLI, restarts a service
that dies, and leaves no process behind after Ctrl-C (SIGINT) or `down`."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import psutil
import pytest

from clusterflow.stack import free_port, settings_env
from clusterflow.up import ports_in_use
from tests.e2e.cdp import Browser
from tests.e2e.test_cli_and_web import chromium, separated_groups

pytestmark = pytest.mark.e2e


def free_port_run(count: int) -> int:
    """The first of `count` consecutive free ports (the workers' metrics ports)."""
    for _ in range(50):
        base = free_port()
        if base + count < 65536 and not ports_in_use(range(base, base + count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


class Up:
    """`clusterflow up` as a subprocess, its output collected line by line."""

    def __init__(self, settings, state_dir: Path, namespace: str, *extra: str):
        self.port, self.state_dir = free_port(), state_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "clusterflow.client.cli", "--namespace", namespace, "up", "--port",
                     str(self.port), "--metrics-port-base", str(free_port_run(4)), "--state-dir", str(state_dir),
                     *extra]
        # The session's database and topic prefix; no numba warm-up (the runs here draw no layout).
        self.env = {**os.environ, **settings_env(settings), "CLUSTERFLOW_CLUSTERER_WARM_UP": "false"}
        self.lines: list[str] = []
        self.new: queue.Queue[str] = queue.Queue()

    def start(self) -> subprocess.Popen:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        return self.proc

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.new.put(line)

    def wait_for(self, pattern: str, timeout: float, count: int = 1) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for line in list(self.lines) if (m := re.search(pattern, line))]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None and self.new.empty():
                break
            try:
                self.new.get(timeout=0.5)
            except queue.Empty:
                pass
        raise AssertionError(f"no {count}x {pattern!r} in `up`'s output within {timeout}s "
                             f"(exit {self.proc.poll()}):\n" + "\n".join(self.lines[-80:]))

    def supervisord(self) -> psutil.Process:
        return psutil.Process(int((self.state_dir / "supervisord.pid").read_text()))

    def tree(self) -> list[psutil.Process]:
        root = self.supervisord()
        return [root, *root.children(recursive=True)]

    def service(self, name: str) -> psutil.Process:
        module = "services.gateway.app:app" if name == "gateway" else f"services.{name}"
        return next(p for p in self.supervisord().children() if module in p.cmdline())

    def cli(self, key: str, namespace: str, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "clusterflow.client.cli", "--url", self.url, "--api-key", key,
                               "--namespace", namespace, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"clusterflow {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout


def gone(processes: list[psutil.Process], timeout: float = 10) -> list[psutil.Process]:
    """The processes still alive after `timeout` (a recycled pid is another process: gone)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_up_serves_a_round_restarts_a_dead_service_and_leaves_nothing_after_sigint(settings, tmp_path, unique):
    namespace = f"up-{unique}"
    up = Up(settings, tmp_path / "up", namespace)
    up.start()
    try:
        key = up.wait_for(r"^\s+api key:\s+(\S+)$", timeout=240)[1]
        assert up.wait_for(r"^clusterflow is up: (\S+)$", timeout=1)[1] == up.url
        up.wait_for(rf"export CLUSTERFLOW_URL={re.escape(up.url)} CLUSTERFLOW_NAMESPACE={namespace} "
                    rf"CLUSTERFLOW_API_KEY={re.escape(key)}", timeout=1)
        tree = up.tree()
        assert len(tree) >= 1 + 5, [p.cmdline() for p in tree]
        # Every service's log streams through, prefixed with its name.
        for service in ("gateway", "preparer", "clusterer", "labeler", "status"):
            up.wait_for(rf"^{service}\s+\| ", timeout=120)

        # A service that dies is restarted, and the restart is logged.
        clusterer = up.service("clusterer")
        os.killpg(clusterer.pid, signal.SIGKILL)
        up.wait_for(r"^supervisor\s+\| .*exited: clusterer \(terminated by SIGKILL; not expected\)", timeout=30)
        up.wait_for(r"^supervisor\s+\| .*spawned: 'clusterer' with pid", timeout=30, count=2)
        assert up.service("clusterer").pid != clusterer.pid

        # A user's round through the CLI, on the restarted clusterer.
        X, _ = separated_groups(4, 50, 16, seed=17)
        data = tmp_path / "documents.parquet"
        pl.DataFrame({"document_id": [f"d{i}" for i in range(len(X))], "text": [f"doc {i}" for i in range(len(X))],
                      "embedding": X.tolist()}).write_parquet(data)
        up.cli(key, namespace, "collections", "create", "docs", "--embedding", f"text={X.shape[1]}")
        assert "imported 200 of 200 documents" in up.cli(key, namespace, "ingest", "docs", str(data))
        up.cli(key, namespace, "clusters", "create", "--collection", "docs", "--name", "topics", "--method", "kmeans",
               "--param", "n_clusters=4", "--defer-visualization")
        executed = up.cli(key, namespace, "execute", "topics", "--wait", "--wait-timeout", "240")
        assert "completed: 4 clusters" in executed, executed
        result = json.loads(up.cli(key, namespace, "results", "topics", "--json"))
        assert result["status"] == "completed" and result["num_points"] == 200
        assert sorted(c["num_members"] for c in result["centroids"]) == [50, 50, 50, 50]

        # The view: link `execute` printed opens the run when pasted: the key rides in the
        # fragment, the page sends it as a header (its /points answer 200), and neither the
        # gateway's access log nor any service's log holds it.
        link = next(line.split(None, 1)[1] for line in executed.splitlines() if line.startswith("view:"))
        assert link.endswith(f"#key={key}") and key not in link.split("#")[0], link
        with Browser(chromium()) as browser:
            browser.open(link, until="document.readyState === 'complete'")
            assert browser.evaluate("location.hash") == ""  # the key left the address bar
        access = up.state_dir / "logs" / "gateway.log"
        view_path = re.escape(link.split("#")[0].removeprefix(up.url))
        up.wait_for(rf'^gateway\s+\| .*"GET {view_path} HTTP/1.1" 200', timeout=30)
        up.wait_for(r'^gateway\s+\| .*"GET /v1/clusters/\S+/points\S* HTTP/1.1" 200', timeout=60)
        logs = {p.name: p.read_text(errors="replace") for p in (up.state_dir / "logs").iterdir()}
        assert access.name in logs and [name for name, text in logs.items() if key in text] == []
        # supervisord's control socket takes a password: no CRIT line greets the user.
        assert not [line for line in up.lines if " CRIT " in line], [l for l in up.lines if " CRIT " in l]

        # Ctrl-C: everything stops, nothing is left.
        everything = [psutil.Process(up.proc.pid), *up.tree()]
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=120) == 0, "\n".join(up.lines[-40:])
        assert gone(everything) == []
        up.wait_for(r"^supervisor\s+\| stopped \(exit 0\)$", timeout=5)
        assert not (up.state_dir / "supervisord.pid").exists()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{up.url}/health", timeout=2)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            for p in up.tree():
                p.kill()


def test_up_detach_returns_and_down_stops_it(settings, tmp_path, unique):
    namespace = f"upd-{unique}"
    up = Up(settings, tmp_path / "up", namespace, "--detach")
    up.start()
    try:
        assert up.proc.wait(timeout=240) == 0, "\n".join(up.lines)
        up.wait_for(r"stop it with: \S.* down$", timeout=5)
        assert httpx.get(f"{up.url}/ready", timeout=5).status_code == 200
        tree = up.tree()
        assert len(tree) >= 1 + 5
        down = subprocess.run([sys.executable, "-m", "clusterflow.client.cli", "down", "--state-dir", str(up.state_dir)],
                              env=up.env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0 and "stopped the services" in down.stdout, down.stdout + down.stderr
        assert gone(tree) == []
        again = subprocess.run([sys.executable, "-m", "clusterflow.client.cli", "down", "--state-dir", str(up.state_dir)],
                               env=up.env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "not up" in again.stdout
    finally:
        if (up.state_dir / "supervisord.pid").exists():
            for p in up.tree():
                p.kill()
