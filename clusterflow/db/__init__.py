"""Database access shared by the services: the engine factory and migrations."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, *, pool_size: int = 5, autocommit: bool = False) -> AsyncEngine:
    """`autocommit`: every statement commits on its own and no BEGIN/ROLLBACK round
    trips surround it (the pre-ping too is one round trip instead of three): for
    single-statement reads and writes on hot paths; `engine.begin()` is then no
    transaction, so multi-statement work needs an engine without it."""
    # pool_pre_ping: a Postgres restart must cost one retry, not a dead pool.
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_async_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True, **options)


def migrate(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations (what `alembic upgrade head` does), synchronously."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)
