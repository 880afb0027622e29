"""The clusterer's composition root. Run: `python -m services.clusterer`."""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from faststream import FastStream

from clusterflow.db import make_engine
from clusterflow.idempotency import PostgresProcessedLog
from clusterflow.messaging import KafkaPublisher, make_broker
from clusterflow.runstate import PostgresRunState
from clusterflow.segments import PostgresSegmentLedger, cache_from_settings
from clusterflow.settings import Settings, get_settings
from clusterflow.storage import S3ObjectStore
from clusterflow.worker import worker_app
from contracts.topics import CLUSTERER, DATASET_PREPARED, LAYOUT_COMPUTE
from services.clusterer.engine import warm_up
from services.clusterer.handler import SERVICE, Clusterer, PostgresLayoutLedger
from services.clusterer.ray_engine import RayEngine, RayJobs
from services.clusterer.ray_job import JOB_SETTINGS

log = logging.getLogger("clusterflow.clusterer")
WARM_UP_DONE = "numba warm-up done"  # logged when it is (tests and benchmarks wait for it)


def bootstrap(settings: Settings | None = None) -> FastStream:
    settings = settings or get_settings()
    broker = make_broker(settings, client_id="clusterflow-clusterer")
    engine = make_engine(settings.database_url, pool_size=2)
    publisher = KafkaPublisher(broker, settings.topic_prefix)
    store = S3ObjectStore.from_settings(settings)
    clusterer = Clusterer(
        store=store, cache=cache_from_settings(settings, SERVICE, store), ledger=PostgresSegmentLedger(engine),
        publisher=publisher, processed=PostgresProcessedLog(engine),
        runs=PostgresRunState(engine), heartbeat_s=settings.heartbeat_seconds, ray=ray_engine(settings, store),
        layouts=PostgresLayoutLedger(engine), threads=settings.clusterer_threads,
    )
    app = worker_app(service=SERVICE, group=CLUSTERER, settings=settings, broker=broker, engine=engine,
                     publisher=publisher, handlers={DATASET_PREPARED: clusterer.handle,
                                                                   LAYOUT_COMPUTE: clusterer.handle_layout})
    if settings.clusterer_warm_up:
        @app.after_startup
        async def _warm_up() -> None:
            start_warm_up()
    return app


def ray_engine(settings: Settings, store: S3ObjectStore) -> RayEngine | None:
    """The Ray engine the settings ask for (None: every run in this process)."""
    if settings.engine == "local" or (settings.engine == "auto" and not settings.ray_address):
        return None
    if not settings.ray_address:
        raise ValueError("CLUSTERFLOW_ENGINE=ray needs CLUSTERFLOW_RAY_ADDRESS (the Ray dashboard, http://host:8265)")
    # The job's processes read and write S3 like this service: they get its settings.
    env = {f"CLUSTERFLOW_{name.upper()}": str(getattr(settings, name)) for name in JOB_SETTINGS}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return RayEngine(jobs=RayJobs(settings.ray_address), store=store, setting=settings.engine,
                     min_points=settings.ray_min_points, python=settings.ray_job_python or sys.executable,
                     env_vars=env, poll_s=settings.ray_poll_seconds, block_rows=settings.ray_block_rows,
                     layout_workers=settings.ray_layout_workers,
                     layout_workers_per_node=settings.ray_layout_workers_per_node)


def start_warm_up(compile_: Callable[[], None] = warm_up) -> threading.Thread:
    """Compile in a daemon thread, beside the consumer: a run that needs the code
    meanwhile waits on numba's compiler lock (no worse than compiling it itself), and
    a shutdown does not wait for it."""
    def run() -> None:
        started = time.perf_counter()
        try:
            compile_()
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first run compiles
            log.exception("numba warm-up failed; the first layout will compile instead")
            return
        log.info("%s in %.1fs", WARM_UP_DONE, time.perf_counter() - started)

    thread = threading.Thread(target=run, name="numba-warm-up", daemon=True)
    thread.start()
    return thread
