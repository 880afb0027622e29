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

    def _transform(self, block, model):
        assert isinstance(model, list)  # boxed: the worker fetches the model once
        self.calls.append(block["n"])
        self.clock += self.seconds
        if self.dies_after is not None and len(self.calls) > self.dies_after:
            return Ref(ActorDied(self.name), self.clock)
        return Ref((block["n"], None, self.name, 0.0, len(self.calls) > 1), self.clock)


def _driver(tasks: list) -> Driver:
    driver = Driver.__new__(Driver)
    driver.ray, driver.spec = FakeRay(), EngineJob(run_id="r", manifest_key="m", members_key="a", coords_key="c",
                                                   result_key="e")
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
