"""Warmed layout workers on the Ray cluster: named, detached actors that outlive a job.

A Ray job's tasks run in worker processes of that job: every job starts new ones, and
each pays UMAP's imports and numba's compile (of the fit and of the transform) on its
first layout call. A `LayoutWorker` is a detached actor named
`clusterflow-layout-<code>-<node id>-<slot>` in the Ray namespace "clusterflow", pinned
to its node: the first job that needs it creates it, every later job (of any clusterer)
finds it by name and gets a process that has compiled already. `workers()` gets or
creates them (Ray's get_if_exists: two jobs at once get the same actor), one per slot
and alive node; an actor that died, was killed or lost its node is simply created again
by the next job, and one that dies mid-job has its blocks transformed by ordinary tasks.

A detached actor keeps what the job that created it had, and neither may leak into a
later job:
- its code: `<code>` is `CODE`, a fingerprint of the project's sources and the versions
  of the libraries the layout runs on, as the job's driver sees them. A deployment with
  other code finds no actor of its name and creates its own; `reap()` kills the actors
  of other code once no job uses them (their job ended, or went silent for
  `STALE_JOB_S`), so they do not pile up. An actor whose own fingerprint (of the code
  it imported) is not its name's is replaced.
- its environment (env_vars): the S3 and segment settings a worker reads blocks with
  are the calling job's (ray_job.JOB_SETTINGS, handed with every call), never the
  creating job's.

CPU accounting: an actor holds `num_cpus=0`, so an idle one never keeps a block task
off its node's CPU (a 1-CPU node with an actor holding a CPU would run no other task).
The driver keeps one call at a time per actor in work (`DEPTH` queued), so a layout uses
at most one CPU per actor, as many as the node's CPUs by default
(`CLUSTERFLOW_RAY_LAYOUT_WORKERS_PER_NODE`); while a layout runs, another job's tasks
on that node share its CPUs with it (oversubscribed, never blocked).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("clusterflow.ray_layout")

NAMESPACE = "clusterflow"
PREFIX = "clusterflow-layout"
DEPTH = 2  # calls queued per actor: the next block's arguments arrive while one runs
# A worker of other code that still says it serves a job is left alone (that job may be
# between calls, e.g. waiting for its fit) unless it has had no call for this long: a
# driver that died never says it is done.
STALE_JOB_S = 600.0
REAP_TIMEOUT_S = 5.0  # a worker of other code busy for longer is in use: left alone
PACKAGES = ("clusterflow", "contracts", "services")  # the project's code a worker imports
LIBRARIES = ("numpy", "scipy", "scikit-learn", "numba", "pynndescent", "umap-learn", "pyarrow", "minio",
             "pydantic", "ray")


def code_fingerprint(roots: list[Path] | None = None, libraries: tuple[str, ...] = LIBRARIES) -> str:
    """12 hex digits that change with any source file of the project's packages
    (`roots`, default: where PACKAGES are imported from) and with the libraries'
    versions."""
    import importlib

    if roots is None:
        roots = [Path(importlib.import_module(name).__file__).parent for name in PACKAGES]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    for name in libraries:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()[:12]


# Computed when the module is imported: in a worker, the code that process loaded.
CODE = code_fingerprint()


class LayoutWorker:
    """One long-lived process that fits and transforms layouts, compiling once. Every
    call names its job: {"id": the Ray job, "settings": its JOB_SETTINGS}."""

    def __init__(self) -> None:
        self.warm: set[str] = set()  # the code paths this process has run (compiled)
        self.calls = 0
        self.model: tuple[str, Any] | None = None  # (object id, the job's fitted model)
        self.job: str | None = None  # the job it serves (None: between jobs)
        self.last = time.monotonic()  # its last call, started or ended

    def info(self) -> dict[str, Any]:
        from services.clusterer.ray_job import _node

        return {"code": CODE, "pid": os.getpid(), "node": _node(), "calls": self.calls, "warm": sorted(self.warm),
                "job": self.job, "idle_s": time.monotonic() - self.last}

    def _serve(self, job: dict) -> dict[str, Any]:
        """The calling job's settings, its id noted."""
        self.job, self.last = job["id"], time.monotonic()
        return job["settings"]

    def _ran(self, path: str) -> bool:
        warm = path in self.warm
        self.warm.add(path)
        self.calls += 1
        self.last = time.monotonic()
        return warm

    def sample(self, job: dict, block: dict, positions):
        """task_sample's: the sample's rows in this block, read by this process."""
        from services.clusterer.ray_job import task_sample

        rows = task_sample(block, positions, self._serve(job))
        self.last = time.monotonic()
        return rows

    def fit(self, job: dict, sample, n_components: int, seed: int):
        """(the model, whether this process had fitted before); two returns, so the
        driver can wait on the small one without fetching the model."""
        from services.clusterer.ray_job import task_fit_layout

        self._serve(job)
        started = time.perf_counter()
        model = task_fit_layout(sample, n_components, seed)
        return model, {"warm": self._ran("fit"), "seconds": time.perf_counter() - started, "pid": os.getpid()}

    def transform(self, job: dict, block: dict, model: list):
        """task_transform's result and whether this process had transformed before.
        `model`: [its object ref], boxed so that Ray does not fetch and unpickle it for
        every block: the worker keeps the job's model until `forget`."""
        import ray

        from services.clusterer.ray_job import task_transform

        settings = self._serve(job)
        key = model[0].hex()
        if self.model is None or self.model[0] != key:
            self.model = (key, ray.get(model[0]))
        out = task_transform(block, self.model[1], settings)
        return (*out, self._ran("transform"))

    def forget(self) -> None:
        """The job is done: its model's memory back, and free to be reaped."""
        self.model, self.job, self.last = None, None, time.monotonic()


def workers(ray, per_node: int = 0) -> tuple[list, int, int]:
    """The layout actors of every alive node with CPUs (`per_node` each, 0: as many as
    the node's CPUs), found by name or created, each answering; how many were created
    now, and how many workers of other code were reaped. An actor that does not answer, or runs other code than its name says,
    is killed and created again once; a node whose actor still fails is left out.
    The idle workers of other code are reaped first (`reap`)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_class = ray.remote(LayoutWorker)
    reaped = len(reap(ray))
    slots = []
    for node in ray.nodes():
        cpus = int(node.get("Resources", {}).get("CPU", 0))
        if not node.get("Alive") or cpus < 1:
            continue
        for slot in range(min(per_node, cpus) if per_node > 0 else cpus):
            slots.append((node["NodeID"], f"{PREFIX}-{CODE}-{node['NodeID']}-{slot}"))

    def get_or_create(node_id: str, name: str):
        return actor_class.options(
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
            max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()

    def existing(name: str) -> bool:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
            return True
        except ValueError:
            return False

    created = sum(not existing(name) for _, name in slots)
    handles = [get_or_create(node_id, name) for node_id, name in slots]
    alive = []
    for (node_id, name), handle in zip(slots, handles):
        for attempt in (1, 2):
            try:
                info = ray.get(handle.info.remote(), timeout=120)
                if info.get("code") == CODE:
                    alive.append(handle)
                    break
                log.info("layout worker %s runs code %s, not %s: replacing it", name, info.get("code"), CODE)
            except Exception as exc:  # noqa: BLE001 - dead, unreachable or stuck: replace it once
                log.warning("layout worker %s does not answer (%s): replacing it", name, type(exc).__name__)
            ray.kill(handle, no_restart=True)
            _wait_gone(ray, name)
            if attempt == 2:
                break
            created += 1
            handle = get_or_create(node_id, name)
    return alive, created, reaped


def reap(ray, stale_after_s: float = STALE_JOB_S) -> list[str]:
    """Kills the layout workers of other code (a former deployment's, or a test's) that
    serve no job, or whose job has been silent for `stale_after_s`; a worker busy for
    REAP_TIMEOUT_S (a call in progress) is in use and left for a later job. Returns
    the names killed."""
    ours = f"{PREFIX}-{CODE}-"
    killed = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry["namespace"] != NAMESPACE or not name.startswith(f"{PREFIX}-") or name.startswith(ours):
            continue
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # gone meanwhile
            continue
        try:
            info = ray.get(handle.info.remote(), timeout=REAP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            continue
        except Exception:  # noqa: BLE001 - dead or unreachable: nothing of it to keep
            info = {}
        if info.get("job") and info.get("idle_s", 0.0) < stale_after_s:
            continue
        log.info("reaping layout worker %s (code %s, not %s)", name, info.get("code"), CODE)
        ray.kill(handle, no_restart=True)
        killed.append(name)
    return killed


def _wait_gone(ray, name: str, timeout_s: float = 30.0) -> None:
    """Until the name is free again (a killed actor's name is released asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)
