"""`clusterflow up` / `clusterflow down`: the whole local system for a user's own data.

`up` starts (or reuses) the servers with `deploy/local/servers.sh`, applies the
migrations, makes an API key for the namespace (unless one is passed), and runs the five
services under **supervisord** (PyPI `supervisor`): it restarts a service that dies and
logs the restart, stops each service's whole process group on shutdown, and can
daemonize (`--detach`), which hand-rolled supervision would all have to re-implement.

In the foreground `up` streams every service's log, each line prefixed with its service
(and supervisord's own lines, where the restarts show, prefixed `supervisor`); Ctrl-C
(SIGINT) or SIGTERM stops supervisord, which stops every service before it exits.
`down` stops a detached (or any running) `up` of the same state directory.

The servers keep running after `down` (other runs, the tests or the demo may use them);
`down --servers` stops them too. Ports and paths come from the same CLUSTERFLOW_*
variables as `servers.sh` (CLUSTERFLOW_HOME, CLUSTERFLOW_KAFKA_PORT, CLUSTERFLOW_PG_PORT,
...); a CLUSTERFLOW_* connection setting already in the environment wins over what
`servers.sh env` prints.
"""
from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clusterflow.stack import wait_until_ok

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "deploy" / "local" / "servers.sh"
WORKERS = ("preparer", "clusterer", "labeler", "status")
SERVICES = ("gateway", *WORKERS)
PREFIX_WIDTH = max(map(len, (*SERVICES, "supervisor")))


def default_state_dir() -> Path:
    home = os.environ.get("CLUSTERFLOW_HOME") or str(Path.home() / ".clusterflow")
    return Path(home).expanduser() / "up"


@dataclass
class Layout:
    """Where one `up` keeps its files: supervisord's config, pid file, socket and logs."""

    state_dir: Path

    @property
    def config(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "supervisord.pid"

    @property
    def socket(self) -> Path:
        return self.state_dir / "supervisor.sock"

    @property
    def supervisor_log(self) -> Path:
        return self.state_dir / "logs" / "supervisor.log"

    def service_log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def running_pid(self) -> int | None:
        """supervisord's pid when one of this state directory is alive."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid


@dataclass
class Plan:
    """What `up` runs: the gateway's address, the workers' metrics ports, the environment."""

    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port_base: int = 9101  # preparer, clusterer, labeler, status on base..base+3; 0: none
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, service: str) -> list[str]:
        if service == "gateway":
            return [self.python, "-m", "uvicorn", "services.gateway.app:app", "--host", self.host,
                    "--port", str(self.port), "--log-level", "info"]
        return [self.python, "-m", f"services.{service}"]

    def service_env(self, service: str) -> dict[str, str]:
        if service == "gateway":
            return {}
        port = self.metrics_port_base + WORKERS.index(service) if self.metrics_port_base else 0
        return {"CLUSTERFLOW_METRICS_PORT": str(port), "CLUSTERFLOW_METRICS_HOST": self.host}


def _ini_value(text: str) -> str:
    # supervisord expands %(name)s in its values: a literal % must be doubled.
    return text.replace("%", "%%")


def render_config(plan: Plan, layout: Layout, password: str | None = None) -> str:
    """supervisord.conf for the five services. The environment the services share comes
    from supervisord's own (set by `up`); only the per-service settings are written here.
    The control socket takes a user and a password (a fresh one per `up`, in this file
    alone, which `up` makes readable by its owner only): without them supervisord logs a
    CRIT line at every start, the first thing a new user would read as an error."""
    password = password or secrets.token_urlsafe(18)
    credentials = ["username=clusterflow", f"password={_ini_value(password)}"]
    sections = [
        "[unix_http_server]", f"file={_ini_value(str(layout.socket))}", "chmod=0700", *credentials, "",
        "[supervisord]", f"logfile={_ini_value(str(layout.supervisor_log))}", "logfile_maxbytes=10MB",
        "logfile_backups=2",
        # `up` follows the log file itself (prefixed); no second copy on stdout.
        "silent=true",
        # As root supervisord warns at every start unless told that root is meant.
        *(["user=root"] if os.geteuid() == 0 else []),
        f"pidfile={_ini_value(str(layout.pidfile))}", "loglevel=info",
        f"directory={_ini_value(str(ROOT))}", f"childlogdir={_ini_value(str(layout.state_dir / 'logs'))}", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{_ini_value(str(layout.socket))}", *credentials, "",
    ]
    for service in SERVICES:
        env = ",".join(f'{k}="{v}"' for k, v in plan.service_env(service).items())
        sections += [
            f"[program:{service}]",
            f"command={_ini_value(shlex.join(plan.argv(service)))}",
            f"directory={_ini_value(str(ROOT))}",
            "autostart=true",
            # Restarted whenever it exits, after any run time; one that dies within
            # startsecs of each of startretries starts is given up on (FATAL, logged).
            "autorestart=true", "startsecs=3", "startretries=5",
            # Signals go to the service's whole process group: nothing it forked survives.
            "stopasgroup=true", "killasgroup=true", "stopwaitsecs=20",
            "redirect_stderr=true",
            f"stdout_logfile={_ini_value(str(layout.service_log(service)))}",
            "stdout_logfile_maxbytes=50MB", "stdout_logfile_backups=2",
            *([f"environment={_ini_value(env)}"] if env else []),
            "",
        ]
    return "\n".join(sections)


# --- the servers, the database, the key -----------------------------------------------------

def parse_exports(text: str) -> dict[str, str]:
    """`export NAME=VALUE` lines (as `servers.sh env` prints them, shell-quoted) as a dict."""
    values = {}
    for line in text.splitlines():
        if line.startswith("export "):
            for word in shlex.split(line[len("export "):]):
                key, _, value = word.partition("=")
                values[key] = value
    return values


def service_environment(servers_env: dict[str, str], environ: dict[str, str]) -> dict[str, str]:
    """The services' environment: the servers' connection settings under any CLUSTERFLOW_*
    the user set (a database URL, a topic prefix...), and unbuffered output for the logs."""
    user = {k: v for k, v in environ.items() if k.startswith("CLUSTERFLOW_")}
    return {**environ, **servers_env, **user, "PYTHONUNBUFFERED": "1"}


def start_servers(say: Callable[[str], None]) -> dict[str, str]:
    if not SERVERS.exists():
        raise RuntimeError(f"{SERVERS} not found: `clusterflow up` runs from a checkout (pip install -e .)")
    say("starting the servers (deploy/local/servers.sh start; running ones are reused)")
    done = subprocess.run(["bash", str(SERVERS), "start"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"servers.sh start exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    env = subprocess.run(["bash", str(SERVERS), "env"], cwd=ROOT, capture_output=True, text=True, check=True)
    return parse_exports(env.stdout)


def prepare_database(env: dict[str, str], namespace: str, api_key: str | None) -> str | None:
    """Migrations applied; returns the key to print: the one passed, a new one for the
    namespace, or None when the gateway checks no keys."""
    from clusterflow.db import migrate
    from clusterflow.keys import create_key
    from clusterflow.settings import Settings

    settings = Settings(**{k[len("CLUSTERFLOW_"):].lower(): v for k, v in env.items()
                           if k.startswith("CLUSTERFLOW_") and k[len("CLUSTERFLOW_"):].lower() in Settings.model_fields})
    migrate(settings.database_url)
    if api_key or not settings.auth_required:
        return api_key
    return create_key(settings.database_url, [namespace], name="clusterflow up")


# --- supervisord ------------------------------------------------------------------------------

def supervisord_argv(layout: Layout, foreground: bool) -> list[str]:
    binary = Path(sys.executable).with_name("supervisord")
    return [str(binary), "-c", str(layout.config), *(["-n"] if foreground else [])]


def wait_ready(url: str, alive: Callable[[], bool], timeout: float, log: Path) -> None:
    """Until the gateway's /ready answers 200 (Kafka, PostgreSQL and S3 reachable)."""
    if not wait_until_ok(f"{url}/ready", timeout,
                         lambda: None if alive() else f"supervisord exited during start; see {log}"):
        raise RuntimeError(f"the gateway at {url} was not ready within {timeout:.0f}s; see {log.parent}")


class LogFollower:
    """Prints new lines of several log files, each prefixed with its name (`tail -F` of
    all of them at once; a file that does not exist yet is picked up when it appears)."""

    def __init__(self, files: dict[str, Path], write: Callable[[str], None]):
        self.files, self.write = files, write
        self.offsets = {name: (path.stat().st_size if path.exists() else 0) for name, path in files.items()}
        self.partial = {name: "" for name in files}

    def poll(self) -> int:
        lines = 0
        for name, path in self.files.items():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < self.offsets[name]:  # rotated
                self.offsets[name] = 0
            if size == self.offsets[name]:
                continue
            with path.open("rb") as f:
                f.seek(self.offsets[name])
                chunk = f.read(size - self.offsets[name])
            self.offsets[name] = size
            text = self.partial[name] + chunk.decode("utf-8", errors="replace")
            *complete, self.partial[name] = text.split("\n")
            for line in complete:
                self.write(prefixed(name, line))
                lines += 1
        return lines


def prefixed(name: str, line: str) -> str:
    return f"{name:<{PREFIX_WIDTH}} | {line.rstrip()}"


def program_name(argv0: str | None = None, which: Callable[[str], str | None] = shutil.which) -> str:
    """How the user types this CLI again: `clusterflow` when that name on PATH is the
    command that is running; else the path it was started by (`.venv/bin/clusterflow up`
    without the venv activated, where a bare `clusterflow` is "command not found"); else
    `python -m clusterflow.client.cli`."""
    started = Path(argv0 if argv0 is not None else sys.argv[0])
    on_path = which("clusterflow")
    if started.name == "clusterflow":
        if on_path and Path(on_path).absolute() == started.absolute():
            return "clusterflow"
        return shlex.quote(str(started.absolute()))
    return "clusterflow" if on_path else f"{shlex.quote(sys.executable)} -m clusterflow.client.cli"


def next_steps(url: str, namespace: str, api_key: str | None, program: str = "clusterflow") -> list[str]:
    exports = f"export CLUSTERFLOW_URL={url} CLUSTERFLOW_NAMESPACE={shlex.quote(namespace)}"
    if api_key:
        exports += f" CLUSTERFLOW_API_KEY={shlex.quote(api_key)}"
    return [exports,
            f"{program} collections create docs --embedding text=384",
            "# documents.parquet: a document_id column, an embedding column (lists of 384 floats),",
            "# and payload columns (title, text...: what the labeler reads)",
            f"{program} ingest docs documents.parquet",
            f"{program} clusters create --collection docs --name topics",
            f"{program} execute topics --wait",
            f"{program} results topics"]


def up(*, plan: Plan, layout: Layout, namespace: str, api_key: str | None, detach: bool,
       say: Callable[[str], None], ready_timeout: float = 120.0, program: str = "clusterflow") -> int:
    pid = layout.running_pid()
    if pid is not None:
        raise RuntimeError(f"already up (supervisord pid {pid}, {layout.state_dir}); `{program} down` first")
    wanted = [plan.port] + ([plan.metrics_port_base + i for i in range(len(WORKERS))] if plan.metrics_port_base else [])
    busy = ports_in_use(wanted, plan.host)
    if busy:
        raise RuntimeError(f"port {', '.join(map(str, busy))} on {plan.host} is in use "
                           "(another `clusterflow up`?): choose others with --port / --metrics-port-base")
    plan.env = service_environment(start_servers(say), dict(os.environ))
    say("applying the migrations")
    api_key = prepare_database(plan.env, namespace, api_key)
    (layout.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    layout.config.touch(mode=0o600)
    layout.config.chmod(0o600)  # it holds the control socket's password
    layout.config.write_text(render_config(plan, layout))
    follower = LogFollower({"supervisor": layout.supervisor_log,
                            **{s: layout.service_log(s) for s in SERVICES}}, say)
    say(f"starting {', '.join(SERVICES)} under supervisord (logs in {layout.state_dir / 'logs'})")
    if detach:
        # supervisord forks into the background itself and returns once it has.
        subprocess.run(supervisord_argv(layout, foreground=False), env=plan.env, check=True)
        # Its daemonized child writes the pid file a moment after the parent returned.
        deadline = time.monotonic() + 10
        while layout.running_pid() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_ready(plan.url, lambda: layout.running_pid() is not None, ready_timeout, layout.supervisor_log)
        announce(plan.url, namespace, api_key, say, detached=True, program=program)
        return 0
    # Its own session: a Ctrl-C in the terminal reaches `up` alone, which then stops
    # supervisord in order (services first), instead of racing it.
    proc = subprocess.Popen(supervisord_argv(layout, foreground=True), env=plan.env, start_new_session=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            say(prefixed("supervisor", f"got {signal.Signals(signum).name}: stopping the services"))
            proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            wait_ready(plan.url, lambda: proc.poll() is None, ready_timeout, layout.supervisor_log)
        except RuntimeError:
            follower.poll()
            if not stopping:
                raise
        if not stopping:
            follower.poll()
            announce(plan.url, namespace, api_key, say, detached=False, program=program)
        while proc.poll() is None:
            if not follower.poll():
                time.sleep(0.2)
        follower.poll()
    finally:
        if proc.poll() is None:  # an error above: leave nothing behind
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        for s, handler in previous.items():
            signal.signal(s, handler)
    say(prefixed("supervisor", f"stopped (exit {proc.returncode})"))
    return 0 if stopping and proc.returncode == 0 else (proc.returncode or 1)


def announce(url: str, namespace: str, api_key: str | None, say: Callable[[str], None], detached: bool,
             program: str = "clusterflow") -> None:
    lines = ["", f"clusterflow is up: {url}", f"  namespace: {namespace}"]
    if api_key:
        lines.append(f"  api key:   {api_key}")
    lines += ["", "next:", *(f"  {step}" for step in next_steps(url, namespace, api_key, program)), ""]
    lines.append(f"stop it with: {program} down" if detached else "Ctrl-C stops it")
    lines.append("")
    for line in lines:
        say(line)


def down(*, layout: Layout, servers: bool, say: Callable[[str], None], timeout: float = 60.0) -> int:
    pid = layout.running_pid()
    if pid is None:
        say(f"not up ({layout.state_dir})")
    else:
        # supervisord stops every service (SIGTERM to each process group, SIGKILL after
        # stopwaitsecs) and then exits.
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while layout.running_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.2)
        if layout.running_pid() == pid:
            raise RuntimeError(f"supervisord (pid {pid}) still runs after {timeout:.0f}s")
        say("stopped the services")
    if servers:
        subprocess.run(["bash", str(SERVERS), "stop"], cwd=ROOT, check=True)
    return 0


def ports_in_use(ports: Iterable[int], host: str = "127.0.0.1") -> list[int]:
    import socket

    busy = []
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy
