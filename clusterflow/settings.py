"""Settings shared by every service, read from `CLUSTERFLOW_*` environment variables.

The defaults match what `deploy/local/servers.sh` starts, so a developer who ran
`servers.sh start` needs no environment at all.
"""
from __future__ import annotations

from functools import lru_cache

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
    # with exponential backoff from `retry_backoff_s`, before dead-lettering the event.
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_s: float = Field(default=0.5, gt=0)

    # A whole clustering run can take minutes; the consumer must not be evicted from
    # its group meanwhile (work runs in a thread, so heartbeats go on).
    max_poll_interval_ms: int = 30 * 60 * 1000

    # Request bodies above this size are refused with 413 before being read whole.
    max_body_bytes: int = 64 * 1024 * 1024
    # Documents per upsert call.
    max_batch_documents: int = 10_000


@lru_cache
def get_settings() -> Settings:
    return Settings()
