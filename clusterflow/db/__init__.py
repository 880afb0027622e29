"""Database access shared by the services: the engine factory and migrations."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    # pool_pre_ping: a Postgres restart must cost one retry, not a dead pool.
    return create_async_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


def migrate(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations (what `alembic upgrade head` does), synchronously."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)
