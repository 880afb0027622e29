"""Settings shared by every service, read from `CLUSTERFLOW_*` environment variables.

The defaults match what `deploy/local/servers.sh` starts, so a developer who ran
`servers.sh start` needs no environment at all.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLUSTERFLOW_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    # Prepended to every topic name (contracts/topics.py holds the names): lets several
    # deployments, or test sessions, share one Kafka cluster without seeing each other.
    topic_prefix: str = ""
    database_url: str = "postgresql+asyncpg://clusterflow:clusterflow@127.0.0.1:15432/clusterflow"
    s3_endpoint: str = "127.0.0.1:18333"
    s3_access_key: str = "clusterflow"
    s3_secret_key: str = "clusterflow-secret"
    s3_bucket: str = "clusterflow"
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    # Consumers retry a transient failure (S3, Postgres briefly away) this many times,
    # with exponential backoff from `retry_backoff_s` doubling up to `retry_backoff_max_s`,
    # before dead-lettering the event. The defaults wait 0.5+1+2+4+8+16+30 = 61.5 s in
    # all (plus the attempts themselves): a server restart or a one-minute S3 outage is
    # survived, a permanent fault ends the run FAILED within about a minute.
    max_attempts: int = Field(default=8, ge=1)
    retry_backoff_s: float = Field(default=0.5, gt=0)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)

    # A whole clustering run can take minutes; the consumer must not be evicted from
    # its group meanwhile (work runs in a thread, so heartbeats go on).
    max_poll_interval_ms: int = 30 * 60 * 1000
    # BLAS/OpenMP threads one clustering run may use (see services/clusterer/pipeline.py).
    clusterer_threads: int = Field(default=1, ge=1)
    # Compile UMAP's numba code (~25-40 s of CPU) in the background when the clusterer
    # starts, rather than in the first run that needs a layout or HDBSCAN's reduction.
    clusterer_warm_up: bool = True
    # Long stages (an export, a clustering, a layout) report that they still move this
    # often (`clusterflow.messaging.heartbeat`); keep it well under the watchdog's stall.
    heartbeat_seconds: float = Field(default=30.0, gt=0)

    # Where full and assign runs and deferred layouts are computed (services/clusterer/ray_engine.py):
    # "local" in the clusterer's process; "ray" always as a job on the Ray cluster whose
    # dashboard (Jobs API) is at `ray_address`, failing the run when it cannot be
    # reached; "auto" on Ray from `ray_min_points` points (a job costs seconds to start;
    # the threshold is measured, see the README), falling back to the process when Ray
    # cannot be reached. Without an address "auto" is "local".
    engine: Literal["local", "ray", "auto"] = "auto"
    ray_address: str = ""
    ray_min_points: int = Field(default=200_000, ge=1)
    # The python the job's driver runs (empty: the clusterer's own interpreter, right
    # when the cluster runs the same image or, locally, the same venv).
    ray_job_python: str = ""
    ray_poll_seconds: float = Field(default=1.0, gt=0)
    # Rows per block task: 65k x 384 float32 = 100 MB read by one task at a time.
    ray_block_rows: int = Field(default=65_536, ge=1)
    # The layout (UMAP fit and transforms) on long-lived, warmed actors, one per CPU of
    # each node (`ray_layout_workers_per_node`, 0: the node's CPUs), named and detached in
    # the Ray namespace "clusterflow": numba compiles once per actor, not in every job's
    # new worker processes (services/clusterer/ray_layout.py). False: the job's tasks.
    ray_layout_workers: bool = True
    ray_layout_workers_per_node: int = Field(default=0, ge=0)

    # Vector segments (clusterflow/segments.py, services/preparer/segments.py). Readers
    # keep the segments they fetched under `segment_cache_dir` (empty: a folder per
    # service in the system's temp dir), at most `segment_cache_bytes` (LRU), fetching
    # `segment_fetch_parallel` at a time.
    segment_cache_dir: str = ""
    segment_cache_bytes: int = Field(default=8 * 2**30, ge=0)
    segment_fetch_parallel: int = Field(default=4, ge=1)
    # A sealed segment holds at most this many rows (~256 MB at 384 dimensions).
    segment_max_rows: int = Field(default=170_000, ge=1)
    # The preparer's sealer looks at the unsealed tails every `seal_interval_seconds`:
    # a tail of `seal_min_rows` or more is sealed at once, a smaller one once it has
    # not grown for one interval. A run seals what is left of its own selection.
    seal_interval_seconds: float = Field(default=5.0, gt=0)
    seal_min_rows: int = Field(default=50_000, ge=1)
    # Compaction rewrites a segment when less than this share of its rows is live, and
    # merges segments smaller than a quarter of `segment_max_rows`; a retired segment's
    # object is deleted once no unfinished run pins it and it has been retired this long
    # (finished runs keep reading theirs meanwhile: deferred layouts, labels).
    compaction_interval_seconds: float = Field(default=60.0, gt=0)
    compaction_min_live_ratio: float = Field(default=0.5, gt=0, le=1)
    segment_retention_seconds: float = Field(default=24 * 3600.0, ge=0)

    # Request bodies above this size are refused with 413 before being read whole.
    max_body_bytes: int = 64 * 1024 * 1024
    # A parquet file uploaded to `POST /v1/collections/{id}/documents/import` (streamed to
    # disk, then to S3; never held in memory).
    max_import_bytes: int = Field(default=64 * 2**30, ge=1)
    # Documents per upsert call.
    max_batch_documents: int = 10_000
    # One document's payload, as compact JSON: a larger one is refused with 413.
    max_document_payload_bytes: int = Field(default=1024 * 1024, ge=1)

    # Every REST call but /health and /ready needs `Authorization: Bearer <key>` (keys:
    # `python -m clusterflow.keys create --namespace NS`) and may use only the key's
    # namespaces. False turns the checks off: for a trusted network only.
    auth_required: bool = True
    # The gateway remembers a verified key this long: a revoked key stops working
    # within this many seconds, and a busy gateway reads api_keys once per key per period.
    auth_cache_seconds: float = Field(default=5.0, ge=0)

    # The status service's watchdog: a run that is not finished and has had no event
    # for this long is ended FAILED ("no progress for N s (last stage X)"), so nothing
    # stays PENDING or PROCESSING forever. It checks every `watchdog_interval_seconds`
    # (0: a tenth of the stall, at least 1 s and at most 60 s).
    watchdog_stall_seconds: float = Field(default=600.0, gt=0)
    watchdog_interval_seconds: float = Field(default=0.0, ge=0)

    # Workers serve /metrics, /health and /ready on this port (None: the service's
    # default, preparer 9101, clusterer 9102, labeler 9103, status 9104; 0: no server).
    # The gateway serves them on its own port. Consumer lag is measured every
    # `metrics_lag_interval_seconds`.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    metrics_lag_interval_seconds: float = Field(default=15.0, gt=0)


def choose_engine(setting: str, address: str, num_points: int, min_points: int) -> Literal["local", "ray"]:
    """Where a run of `num_points` is computed under `engine`'s rule (above). The
    clusterer decides with it, and the preparer, which samples a run to the cap of the
    engine that will compute it (contracts/engine_params.py: `cap_for`)."""
    if setting == "ray":
        return "ray"
    if setting == "auto" and address and num_points >= min_points:
        return "ray"
    return "local"


@lru_cache
def get_settings() -> Settings:
    return Settings()
