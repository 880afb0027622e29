"""The Ray engine on the project's own 2-node Ray cluster (`servers.sh start ray`), over
segments in the real S3: block tasks on both nodes, the same clustering as the
in-process engine (labels joined by document id), an assign job equal to the in-process
assign row for row, a worker raylet SIGKILLed while a block task runs on it, a
submitter SIGKILLed mid-job re-attaching, a cancel, Ray's error on FAILED, and an
unreachable cluster failing or falling back as the setting says."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import numpy as np
import polars as pl
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from clusterflow.messaging import RunFailed
from clusterflow.runstate import RunCanceled
from clusterflow.storage import S3ObjectStore
from services.clusterer import pipeline
from services.clusterer.app import ray_engine
from services.clusterer.ray_engine import submission_id
from tests.conftest import ROOT, SERVERS
from tests.support.segments import put_run

pytestmark = pytest.mark.integration


def _start_ray() -> None:
    done = subprocess.run(["bash", str(SERVERS), "start", "ray"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        pytest.fail(f"the Ray cluster did not start (servers.sh start ray exited {done.returncode}):\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def ray_settings(settings):
    _start_ray()
    assert settings.ray_address, "servers.sh env names the Ray cluster (CLUSTERFLOW_RAY_ADDRESS)"
    return settings.model_copy(update={"engine": "ray", "ray_block_rows": 10_000, "ray_poll_seconds": 0.5})


@pytest.fixture(scope="module")
def store(ray_settings):
    s = S3ObjectStore.from_settings(ray_settings)
    s.ensure_bucket()
    return s


def _data(n: int, d: int, k: int, seed: int = 1):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=seed)
    return [f"doc-{seed}-{i}" for i in range(n)], X.astype(np.float32)


def _job(engine, store, ids, X, k: int, rows_per_segment: int = 15_000, **fields):
    run_id = f"run_{uuid.uuid4().hex[:10]}"
    # every 7th row of each segment is left out: the run reads part of its segments
    key = put_run(store, "raytest", "c1", run_id, ids, X, rows_per_segment, skip_every=7)
    return engine.job_for("raytest", "c1", run_id, kind="full", manifest_key=key, method="kmeans",
                          params={"n_clusters": k}, seed=42, layout=False, **fields)


def _run(engine, job, poll=None):
    async def noop() -> None:
        return None
    return asyncio.run(engine.run(job, poll or noop))


def _jobs_api(settings) -> httpx.Client:
    return httpx.Client(base_url=settings.ray_address, timeout=10)


def _wait_status(settings, sid: str, wanted: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    with _jobs_api(settings) as api:
        while time.monotonic() < deadline:
            resp = api.get(f"/api/jobs/{sid}")
            if resp.status_code == 200 and resp.json()["status"] in wanted:
                return resp.json()["status"]
            time.sleep(0.3)
    raise AssertionError(f"job {sid} never reached {wanted}")


def test_a_ray_run_uses_both_nodes_and_agrees_with_the_in_process_engine(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(60_000, 32, 8)
    job = _job(engine, store, ids, X, 8)
    result = _run(engine, job)

    assert len(set(result.block_nodes)) >= 2, result.block_nodes
    members = store.get_parquet(job.members_key)
    assert members.columns == ["document_id", "cluster_id", "distance_to_centroid"]
    assert members.schema["distance_to_centroid"] == pl.Float32
    keep = np.flatnonzero(np.arange(15_000) % 7 != 0)
    wanted = np.concatenate([start + keep[start + keep < len(ids)] for start in range(0, len(ids), 15_000)])
    assert members.height == len(wanted) == result.num_points == sum(result.sizes)
    assert members["document_id"].n_unique() == members.height

    local = pipeline.cluster(X[wanted], "kmeans", {"n_clusters": 8}, 42)
    expected = pl.DataFrame({"document_id": [ids[i] for i in wanted], "expected": local.labels})
    joined = expected.join(members, on="document_id", how="inner")  # by id: blocks came in any order
    assert joined.height == len(wanted)
    ari = adjusted_rand_score(joined["expected"].to_numpy(), joined["cluster_id"].to_numpy())
    assert ari >= 0.99, ari
    summary = pipeline.summarize(X[wanted], local.labels, 42)
    assert result.metrics["davies_bouldin_index"] == pytest.approx(summary.metrics["davies_bouldin_index"], rel=0.02)
    assert result.metrics["calinski_harabasz_score"] == pytest.approx(
        summary.metrics["calinski_harabasz_score"], rel=0.02)
    assert result.metrics["silhouette_score"] == pytest.approx(summary.metrics["silhouette_score"], abs=0.02)
    assert sorted(result.sizes, reverse=True) == result.sizes
    # per centroid, reduced over the blocks: the members' cosine to it and the nearest ones
    assert len(result.centroid_stats) == result.n_clusters
    row_of = {d: i for i, d in enumerate(ids)}
    centroids = np.asarray(result.centroids, dtype=np.float64)
    for c, stats in enumerate(result.centroid_stats):
        rows = [row_of[d] for d in members.filter(pl.col("cluster_id") == f"cl_{c}")["document_id"]]
        unit = X[rows] / np.linalg.norm(X[rows], axis=1, keepdims=True)
        sims = unit @ (centroids[c] / np.linalg.norm(centroids[c]))
        assert stats["mean_cosine_similarity"] == pytest.approx(float(sims.mean()), abs=1e-5)
        assert stats["min_cosine_similarity"] == pytest.approx(float(sims.min()), abs=1e-5)
        nearest = [ids[rows[i]] for i in np.argsort(-sims)[:5]]
        assert [r["document_id"] for r in stats["representative_ids"]] == nearest


def test_kmeans_auto_on_ray_picks_k_as_the_in_process_engine_and_says_why(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(30_000, 16, 6, seed=5)
    result = _run(engine, _job(engine, store, ids, X, "auto"))
    assert result.n_clusters == 6
    choice = result.method_choice
    assert choice["chose"] == "6 clusters" and choice["criterion"].startswith("agreement with kNN + Leiden")
    assert set(choice["init"]["scores"]) == {"42", "43", "44"}  # started from the graph's communities
    members = store.get_parquet(result.members_key)
    assert members.height == result.num_points == sum(result.sizes)
    _, y = make_blobs(n_samples=30_000, n_features=16, centers=6, cluster_std=2.0, random_state=5)
    truth = dict(zip(ids, y))
    ari = adjusted_rand_score([truth[d] for d in members["document_id"]], members["cluster_id"].to_list())
    assert ari >= 0.99, ari


def test_an_assign_job_matches_the_in_process_assign_row_for_row_on_both_nodes(ray_settings, store, tmp_path) -> None:
    from clusterflow.segments import RunVectors, SegmentCache, load_manifest
    from services.clusterer.assign import Assigner
    from services.clusterer.handler import assign_blocks
    from services.clusterer.ray_job import plan_blocks

    engine = ray_engine(ray_settings, store)
    ids, X = _data(120_000, 64, 6, seed=8)  # 16 block tasks
    # the source run's centroids: a KMeans of other points from the same blobs
    _, source = _data(6_000, 64, 6, seed=8)
    centres = pipeline.summarize(source, pipeline.cluster(source, "kmeans", {"n_clusters": 6}, 42).labels,
                                 42).centroids
    keys = [f"cl_{i}" for i in range(len(centres))]
    threshold = 0.9  # high enough that some rows fall to noise: both rules must agree on it
    job = _job(engine, store, ids, X, 6).model_copy(update={
        "kind": "assign", "centroid_ids": keys, "centroids": centres.tolist(), "assignment_threshold": threshold})
    result = _run(engine, job)
    assert len(set(result.block_nodes)) >= 2, result.block_nodes
    manifest = load_manifest(store, job.manifest_key)
    assert len(result.block_nodes) == len(plan_blocks(manifest, job.block_rows))  # one task per block

    local = Assigner(keys=keys, vectors=centres, threshold=threshold)
    path = str(tmp_path / "members.parquet")
    assign_blocks(local, RunVectors(manifest, SegmentCache(store, tmp_path / "c", 2**30)), path)
    expected = pl.read_parquet(path)
    members = store.get_parquet(job.members_key)
    assert members.schema == expected.schema
    assert members.height == expected.height == result.num_points == members["document_id"].n_unique()
    joined = expected.join(members, on="document_id", suffix="_ray")  # by id: blocks came in any order
    assert joined.height == expected.height
    assert (joined["cluster_id"] == joined["cluster_id_ray"]).all()
    assert 0 < result.noise_count < result.num_points  # the threshold was exercised
    assert result.sizes == local.counts.tolist() and result.noise_count == local.noise
    np.testing.assert_allclose(joined["similarity_ray"].to_numpy(), joined["similarity"].to_numpy(), atol=1e-5)
    assert result.metrics["mean_similarity"] == pytest.approx(local.mean_similarity, rel=1e-6)
    # the blocks' cosine statistics, reduced by the driver, are the in-process assigner's
    ours = local.centroid_stats()
    assert len(result.centroid_stats) == len(keys) == len(ours)
    for theirs, mine in zip(result.centroid_stats, ours):
        assert theirs["mean_cosine_similarity"] == pytest.approx(mine["mean_cosine_similarity"], abs=1e-6)
        assert theirs["min_cosine_similarity"] == pytest.approx(mine["min_cosine_similarity"], abs=1e-6)
        assert theirs["min_cosine_similarity"] >= threshold
        assert [r["document_id"] for r in theirs["representative_ids"]] == \
            [r["document_id"] for r in mine["representative_ids"]]


def _worker_raylet_pid(settings) -> int:
    """The worker node's raylet: in the session of the worker's `ray start --block`
    (its pid file), so only this project's node is touched."""
    home = os.environ.get("CLUSTERFLOW_HOME", os.path.expanduser("~/.clusterflow"))
    leader = int(open(os.path.join(home, "run", "ray-worker.pid")).read())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")[0]
        except OSError:
            continue
        if int(stat[3]) == leader and cmd.endswith(b"/raylet"):
            return int(entry)
    raise AssertionError(f"no raylet in the session of the worker node (pid {leader})")


def _state(settings, resource: str, **filters) -> list[dict]:
    """Ray's state API (the dashboard's /api/v0/...), rows matching every filter."""
    params = [p for k, v in filters.items()
              for p in (("filter_keys", k), ("filter_predicates", "="), ("filter_values", v))]
    with _jobs_api(settings) as api:
        resp = api.get(f"/api/v0/{resource}", params=[("limit", "1000"), *params])
    resp.raise_for_status()
    return resp.json()["data"]["result"]["result"]


def _block_tasks_running_on_the_worker(settings, sid: str) -> bool:
    """Whether a block task of the job runs on the worker node right now."""
    with _jobs_api(settings) as api:
        job_id = api.get(f"/api/jobs/{sid}").json().get("job_id")
    if not job_id:
        return False
    worker = {n["node_id"] for n in _state(settings, "nodes") if not n["is_head_node"] and n["state"] == "ALIVE"}
    running = _state(settings, "tasks", job_id=job_id, state="RUNNING")
    return any(t["name"].startswith("task_") and t["node_id"] in worker for t in running)


def test_sigkill_of_the_worker_raylet_mid_run_completes_or_fails_clearly(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(150_000, 64, 10, seed=2)
    job = _job(engine, store, ids, X, 10, rows_per_segment=30_000)
    sid = submission_id(job.run_id, "full")
    started = time.monotonic()
    outcome: dict = {}

    async def poll() -> None:
        # Killed while one of the job's block tasks runs on the worker, whenever that is
        # (a fixed delay raced the job on a loaded box: it could end first, or not start).
        if "killed" not in outcome and _block_tasks_running_on_the_worker(ray_settings, sid):
            pid = _worker_raylet_pid(ray_settings)
            os.kill(pid, signal.SIGKILL)
            outcome["killed"] = pid
            outcome["killed_after_s"] = time.monotonic() - started

    try:
        try:
            result = _run(engine, job, poll)
            outcome["result"] = result
        except RunFailed as exc:
            outcome["error"] = str(exc)
        elapsed = time.monotonic() - started
        print(f"worker raylet killed {outcome.get('killed_after_s', -1):.1f} s into the job; "
              f"{'completed' if 'result' in outcome else outcome.get('error')} after {elapsed:.1f} s")
        assert "killed" in outcome, "the job ended before a block task was seen running on the worker node"
        assert elapsed < ray_settings.watchdog_stall_seconds, (elapsed, outcome)
        if "result" in outcome:  # Ray retried the lost tasks on the head
            assert store.get_parquet(job.members_key).height == outcome["result"].num_points
        else:
            assert sid in outcome["error"] and "FAILED" in outcome["error"]
    finally:
        _start_ray()  # the worker node back for the next tests


def test_a_submitter_killed_mid_job_reattaches_and_there_is_one_job(ray_settings, store, tmp_path) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(120_000, 64, 10, seed=3)
    job = _job(engine, store, ids, X, 10)
    spec = tmp_path / "job.json"
    spec.write_text(job.model_dump_json())
    script = (
        "import asyncio, sys\n"
        "from clusterflow.settings import Settings\n"
        "from clusterflow.storage import S3ObjectStore\n"
        "from services.clusterer.app import ray_engine\n"
        "from services.clusterer.ray_job import EngineJob\n"
        "s = Settings(engine='ray', ray_block_rows=10000)\n"
        "store = S3ObjectStore.from_settings(s)\n"
        "job = EngineJob.model_validate_json(open(sys.argv[1]).read())\n"
        "async def noop():\n    return None\n"
        "asyncio.run(ray_engine(s, store).run(job, noop))\n")
    env = {**os.environ, **{f"CLUSTERFLOW_{k.upper()}": str(v) for k, v in ray_settings.model_dump().items()
                            if k.startswith(("s3_", "ray_address"))}}
    submitter = subprocess.Popen([sys.executable, "-c", script, str(spec)], cwd=ROOT, env=env)
    sid = submission_id(job.run_id, "full")
    try:
        assert _wait_status(ray_settings, sid, {"RUNNING"}) == "RUNNING"
        time.sleep(1)
    finally:
        submitter.send_signal(signal.SIGKILL)
        submitter.wait(30)
    result = _run(engine, job)  # the restarted submitter: same run id, same job
    with _jobs_api(ray_settings) as api:
        mine = [j for j in api.get("/api/jobs/").json() if j.get("submission_id") == sid]
    assert len(mine) == 1 and mine[0]["status"] == "SUCCEEDED"
    assert store.get_parquet(job.members_key).height == result.num_points


def test_a_cancel_stops_the_ray_job(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(120_000, 64, 10, seed=4)
    job = _job(engine, store, ids, X, 10)
    sid = submission_id(job.run_id, "full")
    polls = {"n": 0}

    async def poll() -> None:
        polls["n"] += 1
        with _jobs_api(ray_settings) as api:
            running = api.get(f"/api/jobs/{sid}").json()["status"] == "RUNNING"
        if running:
            raise RunCanceled(job.run_id)

    with pytest.raises(RunCanceled):
        _run(engine, job, poll)
    assert _wait_status(ray_settings, sid, {"STOPPED", "FAILED", "SUCCEEDED"}, timeout=60) == "STOPPED"


def test_a_failed_job_carries_rays_error_into_the_run(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(40, 8, 2, seed=5)
    job = _job(engine, store, ids, X, 50)
    with pytest.raises(RunFailed) as failed:
        _run(engine, job)
    assert f"{submission_id(job.run_id, 'full')} FAILED" in str(failed.value)
    assert "exceeds the number of points" in str(failed.value)


def test_an_unreachable_cluster_fails_the_run_or_falls_back_as_the_setting_says(ray_settings, store) -> None:
    from contracts.events import ClusteringConfig, DatasetPrepared, SamplingInfo
    from services.clusterer.handler import Clusterer

    event = DatasetPrepared(namespace="raytest", run_id="run_x", cluster_id="c1", task_id="t1",
                            manifest_key="raytest/c1/run_x/manifest.parquet", num_points=10, dimension=4,
                            config=ClusteringConfig(clustering_method="kmeans", embedding_name="text"),
                            sampling=SamplingInfo(matched=10, sampled=10))
    messages: list[str] = []

    async def progress(stage: str, value: float, message: str) -> None:
        messages.append(message)

    for setting in ("ray", "auto"):
        closed = ray_settings.model_copy(update={"engine": setting, "ray_address": "http://127.0.0.1:9",
                                                 "ray_min_points": 1})
        clusterer = Clusterer(store=store, cache=None, ledger=None, publisher=None, processed=None, runs=None,
                              ray=ray_engine(closed, store))
        if setting == "ray":
            with pytest.raises(RunFailed, match="127.0.0.1:9 cannot be reached.*does not fall back"):
                asyncio.run(clusterer._full_on_ray(event, progress))
        else:
            assert asyncio.run(clusterer._full_on_ray(event, progress)) is None
            assert "computing in-process instead" in messages[-1] and "127.0.0.1:9" in messages[-1]


def test_a_method_that_needs_all_its_points_runs_as_one_task_with_the_same_result(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(3_000, 8, 4, seed=6)
    job = _job(engine, store, ids, X, 4, rows_per_segment=1_000)
    job = job.model_copy(update={"method": "agglomerative", "params": {"n_clusters": 4}})
    result = _run(engine, job)
    assert len(result.block_nodes) == 1 and "one Ray task" in result.estimator
    keep = np.flatnonzero(np.arange(1_000) % 7 != 0)
    wanted = np.concatenate([start + keep for start in range(0, 3_000, 1_000)])
    local = pipeline.cluster(X[wanted], "agglomerative", {"n_clusters": 4}, 42)
    members = store.get_parquet(job.members_key)
    joined = pl.DataFrame({"document_id": [ids[i] for i in wanted], "expected": local.labels}).join(
        members, on="document_id")
    assert joined.height == len(wanted)
    assert adjusted_rand_score(joined["expected"].to_numpy(), joined["cluster_id"].to_numpy()) == 1.0
    # the one task summarises as the in-process pipeline does, representatives by document id
    summary = pipeline.summarize(X[wanted], local.labels, 42)
    assert result.centroid_stats == summary.similarity.with_ids(lambda p: [ids[wanted[i]] for i in p]).records()


def test_a_layout_job_fits_a_sample_and_places_every_block(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(24_000, 16, 5, seed=7)
    job = _job(engine, store, ids, X, 5, rows_per_segment=8_000).model_copy(
        update={"kind": "layout", "vis_n_components": 3})
    result = _run(engine, job)
    coords = store.get_parquet(job.coords_key)
    assert coords.columns == ["document_id", "x", "y", "z"] and coords.schema["x"] == pl.Float32
    assert coords.height == result.num_points == coords["document_id"].n_unique()
    assert coords.select(pl.all().exclude("document_id").is_finite().all()).row(0) == (True, True, True)
    assert len(set(result.block_nodes)) >= 2



def _layout_actors(settings) -> list[dict]:
    """The alive layout workers (services/clusterer/ray_layout.py), from Ray's state API."""
    return [a for a in _state(settings, "actors", state="ALIVE")
            if a.get("ray_namespace") == "clusterflow" and (a.get("name") or "").startswith("clusterflow-layout-")]


def test_layout_jobs_share_warmed_workers_and_a_killed_one_is_created_again(ray_settings, store) -> None:
    engine = ray_engine(ray_settings, store)
    ids, X = _data(24_000, 16, 5, seed=8)

    def layout() -> tuple:
        job = _job(engine, store, ids, X, 5, rows_per_segment=8_000).model_copy(update={"kind": "layout"})
        result = _run(engine, job)
        coords = store.get_parquet(job.coords_key).sort("document_id")
        assert coords.columns == ["document_id", "x", "y"] and coords.height == result.num_points
        assert len(set(result.block_nodes)) >= 2, result.block_nodes
        return result.layout_workers, coords

    first, coords = layout()  # whatever ran before: the actors exist after it, one per node's CPU
    assert first["mode"] == "actors" and first["workers"] == 2, first
    actors = {a["name"]: a for a in _layout_actors(ray_settings)}
    assert len(actors) == 2 and len({a["node_id"] for a in actors.values()}) == 2, actors

    second, again = layout()  # the same processes, compiled: nothing created, no cold block
    assert second == {"mode": "actors", "workers": 2, "created": 0, "reaped": 0, "fit_warm": True,
                      "cold_blocks": 0}, second
    assert {a["name"]: a["pid"] for a in _layout_actors(ray_settings)} == {n: a["pid"] for n, a in actors.items()}
    # warmed or not, the same layout (seeded fit, seeded transform), row for row by id
    assert again["document_id"].to_list() == coords["document_id"].to_list()
    np.testing.assert_allclose(again[["x", "y"]].to_numpy(), coords[["x", "y"]].to_numpy(), atol=1e-4)

    victim = actors[min(actors)]
    os.kill(victim["pid"], signal.SIGKILL)  # an actor lost between jobs (its process killed)
    deadline = time.monotonic() + 60
    while any(a["name"] == victim["name"] for a in _layout_actors(ray_settings)) and time.monotonic() < deadline:
        time.sleep(0.5)
    third, after = layout()  # created again by the next job, which is still right
    assert third["mode"] == "actors" and third["workers"] == 2 and third["created"] == 1, third
    assert third["cold_blocks"] >= 1 or not third["fit_warm"], third  # the new one compiled on its first call
    replaced = {a["name"]: a for a in _layout_actors(ray_settings)}
    assert set(replaced) == set(actors) and replaced[victim["name"]]["pid"] != victim["pid"]
    np.testing.assert_allclose(after[["x", "y"]].to_numpy(), coords[["x", "y"]].to_numpy(), atol=1e-4)


def _foreign_layout_worker(settings) -> str:
    """A layout worker named as another code's (a former deployment's), idle, created
    by a Ray job of its own; its name."""
    script = ("import ray; ray.init(address='auto'); "
              "from services.clusterer.ray_layout import LayoutWorker, NAMESPACE, PREFIX; "
              "name = f'{PREFIX}-0ldc0de0ld00-{ray.get_runtime_context().get_node_id()}-0'; "
              "a = ray.remote(LayoutWorker).options(name=name, namespace=NAMESPACE, lifetime='detached', "
              "num_cpus=0).remote(); ray.get(a.info.remote()); print('NAME', name)")
    sid = f"test-foreign-worker-{uuid.uuid4().hex[:8]}"
    with _jobs_api(settings) as api:
        resp = api.post("/api/jobs/", json={"entrypoint": f"{sys.executable} -c \"{script}\"", "submission_id": sid,
                                           "entrypoint_num_cpus": 0,
                                           "runtime_env": {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}})
        assert resp.status_code == 200, resp.text
        assert _wait_status(settings, sid, {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED", \
            api.get(f"/api/jobs/{sid}/logs").text
        return api.get(f"/api/jobs/{sid}/logs").json()["logs"].split("NAME ")[1].split()[0]


def test_layout_workers_serve_each_job_with_its_settings_and_other_codes_workers_are_reaped(ray_settings,
                                                                                           store) -> None:
    from services.clusterer.ray_layout import CODE

    foreign = _foreign_layout_worker(ray_settings)
    assert foreign in {a["name"] for a in _layout_actors(ray_settings)}
    ids, X = _data(24_000, 16, 5, seed=9)

    def layout(settings, where) -> tuple:
        engine = ray_engine(settings, where)
        job = _job(engine, where, ids, X, 5, rows_per_segment=8_000).model_copy(update={"kind": "layout"})
        result = _run(engine, job)
        return result.layout_workers, where.get_parquet(job.coords_key).sort("document_id")

    first, coords = layout(ray_settings, store)
    assert first["mode"] == "actors" and first["reaped"] >= 1, first
    deadline = time.monotonic() + 60
    while foreign in {a["name"] for a in _layout_actors(ray_settings)} and time.monotonic() < deadline:
        time.sleep(0.5)
    names = {a["name"] for a in _layout_actors(ray_settings)}
    assert foreign not in names and len(names) == 2 and all(f"-{CODE}-" in n for n in names), names

    # Another deployment's S3 settings (a bucket of its own, where the first bucket has
    # none of its segments): the same warmed workers, reading with the calling job's.
    other = ray_settings.model_copy(update={"s3_bucket": f"{ray_settings.s3_bucket}-other"})
    other_store = S3ObjectStore.from_settings(other)
    other_store.ensure_bucket()
    second, again = layout(other, other_store)
    assert second["mode"] == "actors" and second["created"] == 0 and second["cold_blocks"] == 0, second
    assert again["document_id"].to_list() == coords["document_id"].to_list()
    np.testing.assert_allclose(again[["x", "y"]].to_numpy(), coords[["x", "y"]].to_numpy(), atol=1e-4)


def test_a_layout_without_workers_runs_as_the_jobs_tasks(ray_settings, store) -> None:
    engine = ray_engine(ray_settings.model_copy(update={"ray_layout_workers": False}), store)
    ids, X = _data(24_000, 16, 5, seed=8)
    job = _job(engine, store, ids, X, 5, rows_per_segment=8_000).model_copy(update={"kind": "layout"})
    result = _run(engine, job)
    assert result.layout_workers["mode"] == "tasks" and result.layout_workers["cold_blocks"] == len(result.block_nodes)
    assert store.get_parquet(job.coords_key).height == result.num_points
