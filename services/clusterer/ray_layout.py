"""Warmed layout workers on the Ray cluster: named, detached actors that outlive a job.

A Ray job's tasks run in worker processes of that job: every job starts new ones, and
each pays UMAP's imports and numba's compile (of the fit and of the transform) on its
first layout call. A `LayoutWorker` is a detached actor named
`clusterflow-layout-<node id>-<slot>` in the Ray namespace "clusterflow", pinned to its
node: the first job that needs it creates it, every later job (of any clusterer) finds
it by name and gets a process that has compiled already. `workers()` gets or creates
them (Ray's get_if_exists: two jobs at once get the same actor), one per slot and alive
node; an actor that died, was killed or lost its node is simply created again by the
next job, and one that dies mid-job has its blocks transformed by ordinary tasks.

CPU accounting: an actor holds `num_cpus=0`, so an idle one never keeps a block task
off its node's CPU (a 1-CPU node with an actor holding a CPU would run no other task).
The driver keeps one call at a time per actor in work (`DEPTH` queued), so a layout uses
at most one CPU per actor, as many as the node's CPUs by default
(`CLUSTERFLOW_RAY_LAYOUT_WORKERS_PER_NODE`); while a layout runs, another job's tasks
on that node share its CPUs with it (oversubscribed, never blocked).

An actor keeps the environment (env_vars) of the job that created it: change the
clusterer's S3 settings and the actors need killing (`ray.kill`, or restarting the
cluster). `VERSION` changes with what the actor does: a job that finds an actor of
another version kills it and creates its own.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger("clusterflow.ray_layout")

NAMESPACE = "clusterflow"
PREFIX = "clusterflow-layout"
VERSION = 1
DEPTH = 2  # calls queued per actor: the next block's arguments arrive while one runs


class LayoutWorker:
    """One long-lived process that fits and transforms layouts, compiling once."""

    def __init__(self) -> None:
        self.warm: set[str] = set()  # the code paths this process has run (compiled)
        self.calls = 0
        self.model: tuple[str, Any] | None = None  # (object id, the job's fitted model)

    def info(self) -> dict[str, Any]:
        from services.clusterer.ray_job import _node

        return {"version": VERSION, "pid": os.getpid(), "node": _node(), "calls": self.calls,
                "warm": sorted(self.warm)}

    def _ran(self, path: str) -> bool:
        warm = path in self.warm
        self.warm.add(path)
        self.calls += 1
        return warm

    def sample(self, block: dict, positions):
        """task_sample's: the sample's rows in this block, read by this process."""
        from services.clusterer.ray_job import task_sample

        return task_sample(block, positions)

    def fit(self, sample, n_components: int, seed: int):
        """(the model, whether this process had fitted before); two returns, so the
        driver can wait on the small one without fetching the model."""
        from services.clusterer.ray_job import task_fit_layout

        started = time.perf_counter()
        model = task_fit_layout(sample, n_components, seed)
        return model, {"warm": self._ran("fit"), "seconds": time.perf_counter() - started, "pid": os.getpid()}

    def transform(self, block: dict, model: list):
        """task_transform's result and whether this process had transformed before.
        `model`: [its object ref], boxed so that Ray does not fetch and unpickle it for
        every block: the worker keeps the job's model until `forget`."""
        import ray

        from services.clusterer.ray_job import task_transform

        key = model[0].hex()
        if self.model is None or self.model[0] != key:
            self.model = (key, ray.get(model[0]))
        out = task_transform(block, self.model[1])
        return (*out, self._ran("transform"))

    def forget(self) -> None:
        self.model = None


def workers(ray, per_node: int = 0) -> tuple[list, int]:
    """The layout actors of every alive node with CPUs (`per_node` each, 0: as many as
    the node's CPUs), found by name or created, each answering; and how many were
    created now. An actor that does not answer, or is of another VERSION, is killed
    and created again once; a node whose actor still fails is left out."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_class = ray.remote(LayoutWorker)
    slots = []
    for node in ray.nodes():
        cpus = int(node.get("Resources", {}).get("CPU", 0))
        if not node.get("Alive") or cpus < 1:
            continue
        for slot in range(min(per_node, cpus) if per_node > 0 else cpus):
            slots.append((node["NodeID"], f"{PREFIX}-{node['NodeID']}-{slot}"))

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
                if info["version"] == VERSION:
                    alive.append(handle)
                    break
                log.info("layout worker %s is version %s, not %s: replacing it", name, info["version"], VERSION)
            except Exception as exc:  # noqa: BLE001 - dead, unreachable or stuck: replace it once
                log.warning("layout worker %s does not answer (%s): replacing it", name, type(exc).__name__)
            ray.kill(handle, no_restart=True)
            _wait_gone(ray, name)
            if attempt == 2:
                break
            created += 1
            handle = get_or_create(node_id, name)
    return alive, created


def _wait_gone(ray, name: str, timeout_s: float = 30.0) -> None:
    """Until the name is free again (a killed actor's name is released asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)
