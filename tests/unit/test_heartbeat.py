"""Long stages beat while they run: progress where the work tells it, and how long."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pyarrow.parquet as pq

from clusterflow.messaging import heartbeat
from contracts.api import TaskStatusEnum
from contracts.topics import STATUS_CHANGED
from tests.fakes import RecordingPublisher
from tests.support.labeler_fakes import clustered_event, corpus


def _event():
    return clustered_event(corpus(seed=1).members)


def test_a_stage_in_a_thread_beats_with_its_progress_and_stops_when_it_ends():
    publisher = RecordingPublisher()

    def work(done) -> None:  # in a worker thread, like the engine's stages
        for step in range(1, 5):
            time.sleep(0.06)
            done(step / 4)

    async def run() -> None:
        async with heartbeat(publisher, _event(), service="clusterer", stage="layout", start=0.7, end=0.8,
                             every_s=0.05) as done:
            await asyncio.to_thread(work, done)
        beats = len(publisher.published)
        await asyncio.sleep(0.2)
        assert len(publisher.published) == beats  # no beat after the block

    asyncio.run(run())
    beats = publisher.on(STATUS_CHANGED)
    assert len(beats) >= 3
    assert {b.stage for b in beats} == {"layout"} and {b.status for b in beats} == {TaskStatusEnum.PROCESSING}
    assert len({b.event_id for b in beats}) == len(beats)  # liveness: every beat is new
    progress = [b.progress for b in beats]
    assert progress == sorted(progress) and 0.7 <= progress[0] and progress[-1] <= 0.8 and progress[-1] > 0.7
    assert beats[-1].message.startswith("layout: ") and "% done" in beats[-1].message


def test_a_beat_that_cannot_be_published_does_not_fail_the_stage():
    broken = RecordingPublisher(away=ConnectionError("kafka is away"))

    async def run() -> str:
        async with heartbeat(broken, _event(), service="preparer", stage="preparing", start=0.02, end=0.1,
                             every_s=0.02):
            await asyncio.sleep(0.1)
        return "done"

    assert asyncio.run(run()) == "done" and broken.attempts >= 2 and broken.published == []
