"""The clusterer's side of the Ray engine: which runs go to Ray, and the Ray job that
computes one (services/clusterer/ray_job.py is what runs inside the cluster).

Which engine (`CLUSTERFLOW_ENGINE`, `choose_engine`):
- `local`: every run in the clusterer's process (the default without a Ray address);
- `ray`: every full and assign run and deferred layout as a Ray job (composite runs
  group a few hundred centroids: always in-process); an unreachable cluster fails the
  run, saying so;
- `auto`: runs of `CLUSTERFLOW_RAY_MIN_POINTS` points or more go to Ray (a job costs
  seconds to start: below that the process is faster, see the README's measurement);
  an unreachable cluster falls back to the process, and the run's status says so.

The job. Its submission id is derived from the run id (`submission_id`), so a clusterer
that restarts mid-run (or a second replica handed the redelivered event) finds the job
and waits for it instead of starting another; a job that already SUCCEEDED is not run
again, its result is read from S3. While it waits the clusterer polls the job and the
run's state: a canceled run stops the job. A job Ray reports FAILED ends the run FAILED
with Ray's own message. Talks to the Jobs REST API (`/api/jobs/`, what
`ray.job_submission.JobSubmissionClient` wraps) with httpx, so every call has a timeout
and the clusterer does not import Ray.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from clusterflow.messaging import RunFailed
from clusterflow.runstate import RunCanceled
from clusterflow.settings import choose_engine  # the kernel's: the preparer samples by it too
from clusterflow.storage import ObjectStore, artifact_key
from services.clusterer.ray_job import RESULT_NAME, SPEC_NAME, EngineJob, EngineResult, get_json, put_json

log = logging.getLogger("clusterflow.clusterer.ray")

Engine = Literal["local", "ray", "auto"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class RayUnavailable(RuntimeError):
    """The Ray cluster's Jobs API cannot be reached (or answers nonsense)."""


def submission_id(run_id: str, kind: str) -> str:
    """One job per run and kind: what a restarted clusterer looks up to re-attach."""
    return f"clusterflow-{kind}-{run_id}"


class RayJobs:
    """The Jobs REST API of one Ray cluster (its dashboard address)."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self.address = address.rstrip("/")
        if not self.address.startswith(("http://", "https://")):
            self.address = f"http://{self.address}"
        self.timeout_s = timeout_s

    async def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            async with httpx.AsyncClient(base_url=self.address, timeout=self.timeout_s) as client:
                return await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RayUnavailable(f"the Ray cluster at {self.address} cannot be reached "
                                 f"({type(exc).__name__}: {exc})") from exc

    async def info(self, sid: str) -> dict[str, Any] | None:
        resp = await self._call("GET", f"/api/jobs/{sid}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RayUnavailable(f"the Ray Jobs API at {self.address} answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    async def submit(self, sid: str, entrypoint: str, runtime_env: dict[str, Any]) -> None:
        resp = await self._call("POST", "/api/jobs/", json={
            "entrypoint": entrypoint, "submission_id": sid, "runtime_env": runtime_env,
            # the driver only coordinates: it must not take a CPU the block tasks need
            "entrypoint_num_cpus": 0, "metadata": {"app": "clusterflow"}})
        if resp.status_code != 200:
            # the same id submitted twice (two replicas at once) is refused: the other one won
            if (await self.info(sid)) is not None:
                return
            raise RayUnavailable(f"Ray refused job {sid} ({resp.status_code}): {resp.text[:300]}")

    async def stop(self, sid: str) -> None:
        await self._call("POST", f"/api/jobs/{sid}/stop")

    async def logs_tail(self, sid: str, chars: int = 1500) -> str:
        try:
            resp = await self._call("GET", f"/api/jobs/{sid}/logs")
            return resp.json().get("logs", "")[-chars:] if resp.status_code == 200 else ""
        except (RayUnavailable, ValueError):
            return ""


@dataclass
class RayEngine:
    """Runs EngineJobs on one Ray cluster and waits for them."""

    jobs: RayJobs
    store: ObjectStore
    setting: Engine = "auto"
    min_points: int = 200_000
    python: str = field(default_factory=lambda: sys.executable)
    env_vars: dict[str, str] = field(default_factory=dict)  # what the job's processes need (S3)
    poll_s: float = 1.0
    block_rows: int = 65_536
    layout_workers: bool = True  # the layout on warmed actors (ray_layout.py)
    layout_workers_per_node: int = 0

    def wants(self, num_points: int) -> bool:
        return choose_engine(self.setting, self.jobs.address, num_points, self.min_points) == "ray"

    @property
    def falls_back(self) -> bool:
        return self.setting == "auto"

    def job_for(self, namespace: str, cluster_id: str, run_id: str, **fields) -> EngineJob:
        def key(name: str) -> str:
            return artifact_key(namespace, cluster_id, run_id, name)

        kind = fields.get("kind", "full")
        folder = key("members").rsplit("/", 1)[0]
        fields = {"layout_workers": self.layout_workers, "layout_workers_per_node": self.layout_workers_per_node,
                  **fields}
        return EngineJob(run_id=run_id, members_key=key("members"), coords_key=key("coords"),
                         result_key=f"{folder}/{kind}-{RESULT_NAME}", block_rows=self.block_rows, **fields)

    async def run(self, job: EngineJob, poll: Callable[[], Awaitable[None]]) -> EngineResult:
        """The job's result: submitted unless a job of this run already exists (then
        re-attached), waited for while `poll` (cancel checks, heartbeats) runs between
        polls. A `RunCanceled` from `poll` stops the job."""
        sid = submission_id(job.run_id, job.kind)
        info = await self.jobs.info(sid)
        if info is None:
            spec_key = job.result_key.replace(RESULT_NAME, SPEC_NAME)
            await asyncio.to_thread(put_json, self.store, spec_key, job)
            entrypoint = f"{self.python} -m services.clusterer.ray_job {spec_key}"
            await self.jobs.submit(sid, entrypoint, {"env_vars": self.env_vars})
            log.info("run %s: submitted Ray job %s", job.run_id, sid)
        else:
            log.info("run %s: re-attached to Ray job %s (%s)", job.run_id, sid, info.get("status"))
        started = time.monotonic()
        while True:
            info = await self.jobs.info(sid)
            status = (info or {}).get("status")
            if status == "SUCCEEDED":
                result = await asyncio.to_thread(get_json, self.store, job.result_key, EngineResult)
                log.info("run %s: Ray job %s succeeded after %.1f s", job.run_id, sid, time.monotonic() - started)
                return result
            if status == "FAILED":
                raise RunFailed(f"the Ray job {sid} FAILED: {await self._why(sid, info)}")
            if status == "STOPPED":
                raise RunFailed(f"the Ray job {sid} was stopped ({info.get('message') or 'no message'})")
            if info is None:
                raise RunFailed(f"the Ray job {sid} vanished from the cluster at {self.jobs.address}")
            try:
                await poll()
            except RunCanceled:
                log.info("run %s canceled: stopping Ray job %s", job.run_id, sid)
                await self.jobs.stop(sid)
                raise
            await asyncio.sleep(self.poll_s)

    async def _why(self, sid: str, info: dict[str, Any]) -> str:
        """Ray's message, with the end of the driver's log (the traceback) when Ray's
        message only says the entrypoint failed."""
        message = info.get("message") or info.get("error_type") or "no message"
        tail = await self.jobs.logs_tail(sid)
        lines = [ln for ln in tail.strip().splitlines() if ln.strip()]
        cause = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), None)
        return f"{message}{f' ({cause.strip()})' if cause else ''}"
