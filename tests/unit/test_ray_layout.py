"""The driver's hand-out of a layout's blocks to the warmed layout workers
(ray_job.Driver._on_workers) over a fake Ray: every block once, a faster worker taking
more, and a worker that dies mid-layout leaving its blocks to tasks. (The real actors:
tests/integration/test_ray_engine.py.)"""
from __future__ import annotations

import pytest

from services.clusterer.ray_job import Driver, EngineJob


class ActorDied(Exception):
    pass


class Ref:
    def __init__(self, value, ready_at: int) -> None:
        self.value, self.ready_at = value, ready_at


class FakeRay:
    """ray.wait returns the ref that finishes first (the lowest ready_at)."""

    class exceptions:
        RayActorError = ActorDied

    def wait(self, refs, num_returns=1):
        first = min(refs, key=lambda r: r.ready_at)
        return [first], [r for r in refs if r is not first]

    def get(self, ref):
        if isinstance(ref.value, Exception):
            raise ref.value
        return ref.value


class Method:
    def __init__(self, call) -> None:
        self.remote = call


class Worker:
    """A layout actor: each transform takes `seconds`; dead after `dies_after` calls."""

    def __init__(self, name: str, seconds: int, dies_after: int | None = None) -> None:
        self.name, self.seconds, self.dies_after, self.calls, self.clock = name, seconds, dies_after, [], 0
        self.transform = Method(self._transform)
        self.forget = Method(lambda: None)

    def _transform(self, job, block, model):
        assert isinstance(model, list)  # boxed: the worker fetches the model once
        assert job["settings"]["s3_bucket"] == "the-jobs"  # the calling job's, never the worker's own
        self.calls.append(block["n"])
        self.clock += self.seconds
        if self.dies_after is not None and len(self.calls) > self.dies_after:
            return Ref(ActorDied(self.name), self.clock)
        return Ref((block["n"], None, self.name, 0.0, len(self.calls) > 1), self.clock)


def _driver(tasks: list) -> Driver:
    driver = Driver.__new__(Driver)
    driver.ray, driver.spec = FakeRay(), EngineJob(run_id="r", manifest_key="m", members_key="a", coords_key="c",
                                                   result_key="e")
    driver._job = {"id": "01000000", "settings": {"s3_bucket": "the-jobs"}}
    driver.r_transform = Method(lambda block, model: tasks.append(block["n"]) or Ref(
        (block["n"], None, "task", 0.0), 1000 + len(tasks)))
    return driver


def test_every_block_once_and_the_faster_worker_takes_more() -> None:
    tasks: list = []
    fast, slow = Worker("fast", 1), Worker("slow", 5)
    blocks = [{"n": i} for i in range(12)]
    out = list(_driver(tasks)._on_workers([fast, slow], blocks, model="m"))
    assert sorted(o[0] for o in out) == list(range(12)) and not tasks
    assert len(fast.calls) > len(slow.calls) >= 2


@pytest.mark.parametrize("alive", [1, 0])
def test_a_dead_workers_blocks_run_as_tasks(alive: int) -> None:
    tasks: list = []
    workers = [Worker("a", 1, dies_after=2)] + [Worker("b", 2) for _ in range(alive)]
    blocks = [{"n": i} for i in range(10)]
    out = list(_driver(tasks)._on_workers(workers, blocks, model="m"))
    assert sorted(o[0] for o in out) == list(range(10))  # every block once, none lost
    assert len(workers[0].calls) <= 2 + 2  # none handed to it after it died (DEPTH queued)
    assert tasks  # the blocks it held went to tasks
    if not alive:
        assert len(tasks) == 10 - 2


# -- a detached worker never serves a job with another's settings or code

def test_a_worker_reads_blocks_with_the_calling_jobs_settings_not_its_creators(monkeypatch) -> None:
    import numpy as np

    import clusterflow.segments as segments
    from services.clusterer import ray_job
    from services.clusterer.ray_layout import LayoutWorker

    seen = []

    class Cache:
        def __init__(self, settings) -> None:
            self.bucket = settings.s3_bucket

        def read_rows_into(self, ref, dimension, rows, out):
            seen.append(self.bucket)
            out[:] = 1.0
            return [f"d{r}" for r in rows]

    monkeypatch.setattr(segments, "cache_from_settings", lambda settings, service, source: Cache(settings))
    monkeypatch.setattr(ray_job, "_CACHES", {})
    monkeypatch.setenv("CLUSTERFLOW_S3_BUCKET", "creator")  # what the creating job's env_vars said
    worker = LayoutWorker()
    block = {"segment": {"segment_id": "s", "key": "k", "num_rows": 4}, "rows": [0, 1, 2, 3], "dimension": 3}
    for bucket in ("first", "second", "first"):
        job = {"id": "02000000", "settings": {**ray_job.job_settings(), "s3_bucket": bucket}}
        rows = worker.sample(job, block, np.array([1, 3]))
        assert rows.shape == (2, 3)
    assert seen == ["first", "second", "first"]
    assert len(ray_job._CACHES) == 2  # one cache per job's settings, kept for the next call
    assert worker.job == "02000000"  # noted: not reaped while its job runs
    worker.forget()
    assert worker.job is None


def test_the_code_fingerprint_follows_the_sources_and_the_libraries(tmp_path) -> None:
    from services.clusterer.ray_layout import code_fingerprint

    def tree(at, body: str):
        (at / "pkg" / "sub").mkdir(parents=True)
        (at / "pkg" / "a.py").write_text("A = 1\n")
        (at / "pkg" / "sub" / "b.py").write_text(body)
        (at / "pkg" / "data.txt").write_text("not code")
        return [at / "pkg"]

    one, same, other = tree(tmp_path / "1", "B = 2\n"), tree(tmp_path / "2", "B = 2\n"), tree(tmp_path / "3", "B = 3\n")
    assert code_fingerprint(one) == code_fingerprint(same)  # where it is installed does not count
    assert code_fingerprint(one) != code_fingerprint(other)
    (tmp_path / "2" / "pkg" / "data.txt").write_text("changed")
    assert code_fingerprint(one) == code_fingerprint(same)  # only the sources
    (tmp_path / "2" / "pkg" / "sub" / "c.py").write_text("")
    assert code_fingerprint(one) != code_fingerprint(same)  # a new module
    assert code_fingerprint(one, ("numpy",)) != code_fingerprint(one, ("numpy", "pyarrow"))


class Timeout(Exception):
    pass


class Handle:
    def __init__(self, name: str, info) -> None:
        self.name, self.result = name, info
        self.info = Method(lambda: self)


class ReapRay:
    """Named actors in namespaces, each answering info() with a dict, raising (dead) or
    timing out (busy)."""

    class exceptions:
        GetTimeoutError = Timeout

    def __init__(self, actors: dict) -> None:
        self.actors, self.killed = actors, []
        self.util = type("util", (), {"list_named_actors": staticmethod(
            lambda all_namespaces: [{"name": n, "namespace": ns} for ns, n in self.actors])})

    def get_actor(self, name, namespace):
        return Handle(name, self.actors[(namespace, name)])

    def get(self, handle, timeout):
        if isinstance(handle.result, Exception):
            raise handle.result
        return handle.result

    def kill(self, handle, no_restart):
        self.killed.append(handle.name)


def test_a_job_reaps_the_idle_workers_of_other_code_only() -> None:
    from services.clusterer.ray_layout import CODE, NAMESPACE, PREFIX, STALE_JOB_S, reap

    def name(code: str, slot: int) -> str:
        return f"{PREFIX}-{code}-node{slot}-0"

    actors = {
        (NAMESPACE, name(CODE, 0)): {"code": CODE, "job": None, "idle_s": 9e9},  # ours: never
        (NAMESPACE, name("0ldc0de0ld00", 1)): {"code": "0ldc0de0ld00", "job": None, "idle_s": 1.0},
        (NAMESPACE, name("0ldc0de0ld00", 2)): {"code": "0ldc0de0ld00", "job": "03000000", "idle_s": 5.0},
        (NAMESPACE, name("0ldc0de0ld00", 3)): {"code": "0ldc0de0ld00", "job": "04000000",
                                               "idle_s": STALE_JOB_S + 1},
        (NAMESPACE, name("0ldc0de0ld00", 4)): Timeout(),  # mid-call: in use
        (NAMESPACE, name("0ldc0de0ld00", 5)): RuntimeError("actor died"),
        (NAMESPACE, f"{PREFIX}-node6-0"): {"version": 1, "pid": 1},  # before fingerprints
        ("elsewhere", name("0ldc0de0ld00", 7)): {"job": None},
        (NAMESPACE, "something-else"): {"job": None},
    }
    ray = ReapRay(actors)
    assert reap(ray) == ray.killed
    assert sorted(ray.killed) == sorted([name("0ldc0de0ld00", 1), name("0ldc0de0ld00", 3), name("0ldc0de0ld00", 5),
                                         f"{PREFIX}-node6-0"])
