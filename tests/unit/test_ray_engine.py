"""The clusterer's side of the Ray engine over a fake Jobs API: which runs go to Ray,
re-attaching instead of submitting twice, FAILED carrying Ray's error, a cancel
stopping the job. (The real cluster: tests/integration/test_ray_engine.py.)"""
from __future__ import annotations

import asyncio

import pytest

from clusterflow.messaging import RunFailed
from clusterflow.runstate import RunCanceled
from services.clusterer.ray_engine import RayEngine, choose_engine, submission_id
from services.clusterer.ray_job import EngineJob, EngineResult
from tests.fakes import FakeJobs, MemoryObjectStore


def test_choose_engine() -> None:
    assert choose_engine("local", "http://ray:8265", 10**7, 100) == "local"
    assert choose_engine("ray", "http://ray:8265", 5, 100) == "ray"
    assert choose_engine("auto", "http://ray:8265", 99, 100) == "local"
    assert choose_engine("auto", "http://ray:8265", 100, 100) == "ray"
    assert choose_engine("auto", "", 10**7, 100) == "local"  # no cluster named: nothing to try


@pytest.fixture
def engine():
    store = MemoryObjectStore()  # the job's spec and result go through the port's put_bytes/get_bytes

    def make(statuses):
        return RayEngine(jobs=FakeJobs(statuses), store=store, setting="ray", poll_s=0.001)
    return make, store


def _job(engine):
    return engine.job_for("ns", "c1", "run_1", kind="full", manifest_key="ns/c1/run_1/manifest.parquet")


async def _noop() -> None:
    return None


def test_a_new_run_is_submitted_once_and_its_result_read(engine) -> None:
    make, store = engine
    ray = make([None, {"status": "PENDING"}, {"status": "RUNNING"}, {"status": "SUCCEEDED"}])
    job = _job(ray)
    store.objects[job.result_key] = EngineResult(run_id="run_1", n_clusters=3).model_dump_json().encode()
    result = asyncio.run(ray.run(job, _noop))
    assert result.n_clusters == 3
    assert len(ray.jobs.submitted) == 1 and "services.clusterer.ray_job" in ray.jobs.submitted[0]
    assert submission_id("run_1", "full") == "clusterflow-full-run_1"
    # the job reads its spec from the key named on its command line, written through the port
    spec_key = ray.jobs.submitted[0].split()[-1]
    assert EngineJob.model_validate_json(store.get_bytes(spec_key)) == job


def test_an_existing_job_is_reattached_not_submitted_again(engine) -> None:
    make, store = engine
    ray = make([{"status": "RUNNING"}, {"status": "RUNNING"}, {"status": "SUCCEEDED"}])
    job = _job(ray)
    store.objects[job.result_key] = EngineResult(run_id="run_1", n_clusters=2).model_dump_json().encode()
    assert asyncio.run(ray.run(job, _noop)).n_clusters == 2
    assert ray.jobs.submitted == []


def test_a_failed_job_carries_rays_error(engine) -> None:
    make, _ = engine
    ray = make([None, {"status": "FAILED", "message": "Job entrypoint command failed with exit code 1"}])
    with pytest.raises(RunFailed) as failed:
        asyncio.run(ray.run(_job(ray), _noop))
    text = str(failed.value)
    assert "clusterflow-full-run_1 FAILED" in text and "exit code 1" in text and "exceeds the number of points" in text


def test_a_cancel_stops_the_job(engine) -> None:
    make, _ = engine
    ray = make([None, {"status": "RUNNING"}])

    async def canceled() -> None:
        raise RunCanceled("run_1")

    with pytest.raises(RunCanceled):
        asyncio.run(ray.run(_job(ray), canceled))
    assert ray.jobs.stopped == ["clusterflow-full-run_1"]
