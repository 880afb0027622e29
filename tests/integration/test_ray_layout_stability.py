"""layout_stability on the Ray engine, on the project's own Ray cluster, S3, Kafka and
Postgres: a deferred layout computed as a Ray job is aligned onto the previous run's
before it is served, `transform` (which the Ray engine does not keep a model for)
aligns and says so, and the outcome goes out on the status topic before the layout
is stored."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clusterflow.db import make_engine
from clusterflow.layouts import READY, claim_layout
from clusterflow.db.schema import layout_requests
from clusterflow.messaging import KafkaPublisher, ensure_topics, make_broker
from clusterflow.storage import artifact_key
from contracts.events import DEFERRED_LAYOUT_STAGE, ComputeLayout, RunStatusChanged
from contracts.topics import STATUS_CHANGED
from services.clusterer.app import ray_engine
from services.clusterer.handler import Clusterer, PostgresLayoutLedger
from tests.integration.test_ray_engine import ray_settings, store  # noqa: F401 - the Ray cluster's fixtures
from tests.support.kafka import read_topic
from tests.support.segments import put_run
from tests.unit.test_layout_stability import displacement, grid_corpus

pytestmark = pytest.mark.integration
NS, CLUSTER = "raystable", "clust_r"


def test_a_deferred_ray_layout_keeps_the_previous_runs_shape(ray_settings, store, unique):  # noqa: F811
    X = grid_corpus(seed=9)(3_000)
    ids = [f"d{i}" for i in range(len(X))]
    # the second and third runs: another seed (as a refit differs), aligned and not
    first, second, third = f"run_{unique}_a", f"run_{unique}_b", f"run_{unique}_c"
    manifests = {run: put_run(store, NS, CLUSTER, run, ids, X, rows_per_segment=1_000)
                 for run in (first, second, third)}
    engine = make_engine(ray_settings.database_url, pool_size=2)

    def command(run_id: str, seed: int, setting: str, previous: str | None) -> ComputeLayout:
        return ComputeLayout(namespace=NS, cluster_id=CLUSTER, run_id=run_id, task_id=f"task_{run_id}",
                             manifest_key=manifests[run_id], coords_key=artifact_key(NS, CLUSTER, run_id, "coords"),
                             num_points=len(X), seed=seed, layout_stability=setting, previous_run_id=previous,
                             embedding_name="text")

    async def scenario() -> None:
        await ensure_topics(ray_settings.kafka_bootstrap, (STATUS_CHANGED,), ray_settings.topic_prefix)
        broker = make_broker(ray_settings, client_id=f"test-ray-stability-{unique}")
        await broker.start()
        try:
            clusterer = Clusterer(store=store, cache=None, ledger=None,
                                  publisher=KafkaPublisher(broker, ray_settings.topic_prefix), processed=None,
                                  runs=None, ray=ray_engine(ray_settings, store),
                                  layouts=PostgresLayoutLedger(engine))
            for cmd in (command(first, 42, "none", None), command(second, 7, "transform", first),
                        command(third, 7, "none", first)):
                assert (await claim_layout(engine, NS, cmd.run_id)).claimed
                await clusterer.handle_layout(cmd)
            async with engine.connect() as conn:
                rows = (await conn.execute(layout_requests.select().where(
                    layout_requests.c.run_id.in_([first, second, third])))).mappings().all()
            assert {(r["run_id"], r["status"], r["error"]) for r in rows} == {
                (run, READY, None) for run in (first, second, third)}
        finally:
            await broker.stop()
            await engine.dispose()

    asyncio.run(scenario())
    reports = {}
    for record in read_topic(ray_settings, STATUS_CHANGED.name):
        event = RunStatusChanged.model_validate_json(record.value)
        if event.stage == DEFERRED_LAYOUT_STAGE and event.run_id in (first, second, third):
            # What the layout applied travels in the report's typed fields (RunStatusChanged v2).
            reports[event.run_id] = {"layout_stability_applied": getattr(event.layout_stability_applied, "value", None),
                                     "layout_stability_reason": event.layout_stability_reason}
    assert reports[first] == {"layout_stability_applied": "none",
                              "layout_stability_reason": "layout_stability 'none': a fresh layout"}
    assert reports[second] == {
        "layout_stability_applied": "aligned",
        "layout_stability_reason": "cannot transform: the Ray engine lays out without keeping a projection; "
                                   f"aligned to run {first} on 3000 shared documents"}
    assert reports[third]["layout_stability_applied"] == "none"
    for run in (first, second, third):  # the job's own output is gone once the layout is stored
        assert not store.exists(artifact_key(NS, CLUSTER, run, "coords-unaligned"))
    a, b, c = (store.get_parquet(artifact_key(NS, CLUSTER, run, "coords")) for run in (first, second, third))

    def moved(frame) -> float:
        return displacement(frame.select("x", "y").to_numpy(), frame["document_id"].to_numpy(),
                            a.select("x", "y").to_numpy(), a["document_id"].to_numpy())

    with_, without = moved(b), moved(c)
    print(f"Ray layouts of two seeds: the shared documents moved {without:.3f} of the extent without "
          f"alignment, {with_:.3f} with")
    assert with_ < 0.35 * without
