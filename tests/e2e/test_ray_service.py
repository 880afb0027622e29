"""The services with CLUSTERFLOW_ENGINE=ray on the project's 2-node Ray cluster: the
clusterer SIGKILLed mid-Ray-job re-attaches to the same job (one job, one result, one
COMPLETED); an assign run on Ray gives the in-process rule's members; a deferred layout
asked through two gateway processes at once is computed once (one claim, one Ray job)
and both answer it.

Its own stack (the five services, and a second gateway) on a topic prefix of its own,
so it does not share consumer groups with the session's in-process stack."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from clusterflow.stack import free_port, wait_until_ok
from clusterflow.storage import S3ObjectStore
from contracts.topics import EXECUTION_CLUSTERED, LAYOUT_COMPUTE
from services.clusterer.assign import Assigner
from services.clusterer.ray_engine import submission_id
from tests.conftest import ROOT, SERVERS
from tests.e2e.conftest import start_stack, wait_for_task
from tests.e2e.test_faults import assert_applied_once, log_since, log_size
from tests.support.corpus import grouped_vectors, make_cluster, make_collection, start_run
from tests.support.kafka import read_topic, snapshot

pytestmark = pytest.mark.e2e

GROUPS, PER_GROUP, DIM, SEED = 6, 2_000, 32, 61


@pytest.fixture(scope="module")
def ray_settings(settings):
    done = subprocess.run(["bash", str(SERVERS), "start", "ray"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the Ray cluster did not start: {done.stdout[-3000:]}\n{done.stderr[-3000:]}", pytrace=False)
    assert settings.ray_address, "servers.sh env names the Ray cluster (CLUSTERFLOW_RAY_ADDRESS)"
    # Every run a Ray job, small blocks so a 12K-point run has several block tasks; no
    # numba warm-up: with engine=ray the clusterer's process lays nothing out.
    return settings.model_copy(update={
        "engine": "ray", "ray_block_rows": 2_000, "ray_poll_seconds": 0.5, "clusterer_warm_up": False,
        "topic_prefix": f"{settings.topic_prefix}ray."})


@pytest.fixture(scope="module")
def ray_stack(ray_settings, tmp_path_factory):
    s = start_stack(ray_settings, tmp_path_factory.mktemp("ray-service-logs"), "e2eray")
    yield s
    s.stop()


def _client(stack, url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30,
                        headers={"X-Namespace": "e2eray", "Authorization": f"Bearer {stack.api_key}"})


@pytest.fixture(scope="module")
def ray_api(ray_stack):
    with _client(ray_stack, ray_stack.url) as client:
        yield client


@pytest.fixture(scope="module")
def collection(ray_api):
    return make_collection(ray_api, groups=GROUPS, per_group=PER_GROUP, dim=DIM, seed=SEED)


def _jobs(settings, sid: str) -> list[dict]:
    with httpx.Client(base_url=settings.ray_address, timeout=10) as api:
        return [j for j in api.get("/api/jobs/").json() if j.get("submission_id") == sid]


def _wait_job(settings, sid: str, wanted: set[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = _jobs(settings, sid)
        if jobs and jobs[0]["status"] in wanted:
            return jobs[0]["status"]
        time.sleep(0.2)
    raise AssertionError(f"Ray job {sid} never reached {wanted}: {_jobs(settings, sid)}")


def _clustered(settings, run_id: str) -> dict:
    """The run's ExecutionClustered event, as the clusterer published it."""
    events = [json.loads(r.value) for r in read_topic(settings, EXECUTION_CLUSTERED.name)
              if f'"run_id":"{run_id}"'.encode() in r.value]
    assert events, f"no ExecutionClustered for {run_id}"
    return events[0]


def _completed_run(api, stack, cluster_id: str, body: dict | None = None) -> str:
    task = start_run(api, cluster_id, body)
    done = wait_for_task(api, task["task_id"], timeout=300, stack=stack)
    assert done["status"] == "COMPLETED", done
    return task["additional_data"]["run_id"]


@pytest.fixture(scope="module")
def ray_run(ray_api, ray_stack, collection) -> tuple[str, str]:
    """A full run computed as a Ray job, its layout deferred: (cluster id, run id)."""
    cluster_id = make_cluster(ray_api, collection, "kmeans", {"n_clusters": GROUPS}, defer_visualization=True)
    return cluster_id, _completed_run(ray_api, ray_stack, cluster_id)


def test_the_clusterer_killed_mid_ray_job_reattaches_and_there_is_one_result(
        ray_api, ray_stack, ray_settings, collection) -> None:
    cluster_id = make_cluster(ray_api, collection, "kmeans", {"n_clusters": GROUPS}, defer_visualization=True)
    task = start_run(ray_api, cluster_id)
    run_id = task["additional_data"]["run_id"]
    sid = submission_id(run_id, "full")
    assert _wait_job(ray_settings, sid, {"RUNNING", "SUCCEEDED", "FAILED", "STOPPED"}) == "RUNNING"
    ray_stack.kill("services.clusterer", signal.SIGKILL)  # the job keeps running on the cluster
    offset = log_size(ray_stack, "services.clusterer")
    ray_stack.spawn("services.clusterer")
    # The dead member holds its partitions until its session times out; the restarted
    # clusterer then gets the redelivered DatasetPrepared and looks the job up.
    done = wait_for_task(ray_api, task["task_id"], timeout=300, stack=ray_stack)
    assert done["status"] == "COMPLETED", done
    jobs = _jobs(ray_settings, sid)
    assert len(jobs) == 1 and jobs[0]["status"] == "SUCCEEDED", jobs  # one job: not submitted again
    restarted = log_since(ray_stack, "services.clusterer", offset)
    assert f"re-attached to Ray job {sid}" in restarted and f"submitted Ray job {sid}" not in restarted, restarted
    execution = assert_applied_once(ray_settings, run_id)  # one execution, one ExecutionClustered
    assert execution["num_points"] == GROUPS * PER_GROUP and execution["num_clusters"] == GROUPS
    assert "on Ray" in _clustered(ray_settings, run_id)["estimator"]


def test_an_assign_run_on_ray_gives_the_in_process_rules_members(ray_api, ray_stack, ray_settings, ray_run) -> None:
    cluster_id, source_id = ray_run
    task = start_run(ray_api, cluster_id, {"mode": "assign", "assignment_threshold": 0.9})
    run_id = task["additional_data"]["run_id"]
    done = wait_for_task(ray_api, task["task_id"], timeout=300, stack=ray_stack)
    assert done["status"] == "COMPLETED", done
    assert _jobs(ray_settings, submission_id(run_id, "assign"))[0]["status"] == "SUCCEEDED"
    execution = assert_applied_once(ray_settings, run_id)
    assert execution["mode"] == "assign" and "on Ray" in _clustered(ray_settings, run_id)["estimator"]

    # The in-process rule over the same documents and the source run's stored centroids.
    store = S3ObjectStore.from_settings(ray_settings)
    source = snapshot(ray_settings, [source_id])["executions"][0]
    centroids = store.get_parquet(source["artifacts"]["centroids_key"]).filter(pl.col("centroid").is_not_null())
    X, _ = grouped_vectors(GROUPS, PER_GROUP, DIM, SEED)
    ids = [f"doc_{i:05d}" for i in range(len(X))]
    local = Assigner(keys=centroids["cluster_id"].to_list(), threshold=0.9,
                     vectors=np.asarray(centroids["centroid"].to_numpy(), dtype=np.float32))
    expected = pl.from_arrow(local.assign(pa.array(ids), X))
    members = store.get_parquet(execution["artifacts"]["members_key"])
    assert members.columns == expected.columns and members.height == expected.height
    joined = expected.join(members, on="document_id", suffix="_ray")
    assert joined.height == len(ids) and (joined["cluster_id"] == joined["cluster_id_ray"]).all()
    assert execution["num_points"] == len(ids) and execution["noise_count"] == local.noise
    sizes = {c["cluster_id"]: c["num_members"] for c in execution["centroids"]}
    assert {k: sizes[k] for k in local.keys} == dict(zip(local.keys, local.counts.tolist()))


def test_a_deferred_layout_asked_through_two_gateways_at_once_is_computed_once(
        ray_api, ray_stack, ray_settings, ray_run) -> None:
    cluster_id, run_id = ray_run
    second = free_port()
    ray_stack.argv["gateway-2"] = [sys.executable, "-m", "uvicorn", "services.gateway.app:app", "--host",
                                   "127.0.0.1", "--port", str(second), "--log-level", "warning"]
    ray_stack.spawn("gateway-2")
    assert wait_until_ok(f"http://127.0.0.1:{second}/health", 60, lambda: None), "the second gateway did not start"
    url = f"/v1/clusters/{cluster_id}/executions/{run_id}/visualization"
    clients = [_client(ray_stack, ray_stack.url), _client(ray_stack, f"http://127.0.0.1:{second}")]
    answers: list = [None] * 4
    barrier = threading.Barrier(4)

    def ask(i: int) -> None:  # two requests through each gateway, all at the same moment
        barrier.wait()
        answers[i] = clients[i % 2].get(url, params={"limit": 50})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(a is not None and a.status_code == 202 for a in answers), [a and a.text for a in answers]
        assert sum(a.json()["computed_now"] for a in answers) == 1  # one caller claimed it
        ready = []
        deadline = time.monotonic() + 300
        for client in clients:  # both gateways answer the one layout
            page = client.get(url, params={"limit": 50})
            while page.status_code == 202 and time.monotonic() < deadline:
                time.sleep(1)
                page = client.get(url, params={"limit": 50})
            assert page.status_code == 200, page.text
            ready.append([(p["document_id"], p["x"], p["y"]) for p in page.json()["points"]])
        assert ready[0] == ready[1] and len(ready[0]) == 50
    finally:
        for client in clients:
            client.close()
    sid = submission_id(run_id, "layout")
    # the coordinates are readable a moment before the job's driver exits
    assert _wait_job(ray_settings, sid, {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=60) == "SUCCEEDED"
    assert len(_jobs(ray_settings, sid)) == 1  # computed once, on Ray
    commands = [r for r in read_topic(ray_settings, LAYOUT_COMPUTE.name) if run_id.encode() in r.value]
    assert len(commands) == 1, commands
