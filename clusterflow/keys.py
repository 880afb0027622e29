"""API keys: creation, verification, listing, revocation, and the bootstrap command.

A key reads `cfk_<key_id>_<secret>`: `key_id` is 12 random hex digits that find the
row, `secret` 32 random bytes (url-safe base64). Only sha256 of the whole key is stored
(`api_keys.key_hash`); the key itself is shown once, when it is created. A key is
scoped to a list of namespaces, or to "*" (all of them).

    python -m clusterflow.keys create --namespace team-a [--namespace team-b | --namespace '*'] [--name ci]
    python -m clusterflow.keys list
    python -m clusterflow.keys revoke KEY_ID

The commands use `CLUSTERFLOW_DATABASE_URL` (or `--database-url`). Tests and the demo
create keys straight in the database with `create_key(url_or_engine, namespaces)`.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import re
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from clusterflow.db.schema import api_keys

PREFIX = "cfk"
ALL_NAMESPACES = "*"
_KEY = re.compile(r"^cfk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def valid_namespace(value: str) -> bool:
    """What X-Namespace may be: 1 to 128 letters, digits, '-', '_' or '.'."""
    return bool(_NAMESPACE.match(value))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """(key_id, key): a fresh key and its lookup id."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The lookup id of a well-formed key, None for anything else."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def check_namespaces(namespaces: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(n.strip() for n in namespaces))
    if not cleaned:
        raise ValueError("a key needs at least one namespace (or '*' for all)")
    bad = [n for n in cleaned if n != ALL_NAMESPACES and not valid_namespace(n)]
    if bad:
        raise ValueError(f"invalid namespace(s) {bad}: 1 to 128 letters, digits, '-', '_' or '.', or '*'")
    return [ALL_NAMESPACES] if ALL_NAMESPACES in cleaned else cleaned


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    namespaces: tuple[str, ...]
    name: str | None = None

    def allows(self, namespace: str) -> bool:
        return ALL_NAMESPACES in self.namespaces or namespace in self.namespaces

    @property
    def only_namespace(self) -> str | None:
        """The namespace a request without X-Namespace uses: the key's single one."""
        if len(self.namespaces) == 1 and self.namespaces[0] != ALL_NAMESPACES:
            return self.namespaces[0]
        return None


# --- the store ---------------------------------------------------------------------------

async def create_key_async(engine: AsyncEngine, namespaces: list[str], name: str | None = None
                           ) -> tuple[str, str]:
    """Store a new key's hash; returns (key_id, key). The key is not kept anywhere."""
    namespaces = check_namespaces(namespaces)
    key_id, key = generate_key()
    async with engine.begin() as conn:
        await conn.execute(api_keys.insert().values(key_id=key_id, key_hash=hash_key(key), name=name,
                                                    namespaces=namespaces))
    return key_id, key


async def list_keys_async(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(api_keys.c.key_id, api_keys.c.name, api_keys.c.namespaces, api_keys.c.created_at,
                   api_keys.c.revoked_at).order_by(api_keys.c.created_at)
        )).mappings().all()
    return [dict(r) for r in rows]


async def revoke_key_async(engine: AsyncEngine, key_id: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now().astimezone())
        )
    return result.rowcount > 0


def _run(target: str | AsyncEngine, work) -> Any:
    """Run `work(engine)` to completion from synchronous code."""
    async def main() -> Any:
        if isinstance(target, AsyncEngine):
            return await work(target)
        engine = create_async_engine(target, poolclass=NullPool)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def create_key(target: str | AsyncEngine, namespaces: list[str], name: str | None = None) -> str:
    """A new key for `namespaces`, stored in the database at `target` (a URL or an
    engine); returns the key itself. For synchronous callers (tests, the demo)."""
    return _run(target, lambda engine: create_key_async(engine, namespaces, name))[1]


def revoke_key(target: str | AsyncEngine, key_id: str) -> bool:
    return _run(target, lambda engine: revoke_key_async(engine, key_id))


class KeyStore:
    """The gateway's verifier: looks a key up by id, compares hashes in constant time,
    and remembers the answer (positive or negative) for `cache_seconds`."""

    def __init__(self, engine: AsyncEngine, cache_seconds: float = 5.0, max_entries: int = 10_000) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def verify(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._lookup(key, digest)
        if self.cache_seconds > 0:
            if len(self._cache) >= self.max_entries:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
            self._cache[digest] = (now + self.cache_seconds, found)
        return found

    async def _lookup(self, key: str, digest: str) -> ApiKey | None:
        key_id = key_id_of(key)
        if key_id is None:
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(api_keys.c.key_hash, api_keys.c.namespaces, api_keys.c.name)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            )).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return ApiKey(key_id=key_id, namespaces=tuple(row.namespaces), name=row.name)


# --- the command -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from clusterflow.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m clusterflow.keys", description="Manage clusterflow API keys.")
    parser.add_argument("--database-url", default=None, help="default: CLUSTERFLOW_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--namespace", "-n", action="append", required=True,
                        help="a namespace the key may use; repeat for several; '*' for all")
    create.add_argument("--name", default=None, help="a note saying whose key it is")
    sub.add_parser("list", help="list the keys (ids, names, namespaces; never the keys)")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)
    url = args.database_url or get_settings().database_url

    if args.command == "create":
        try:
            namespaces = check_namespaces(args.namespace)
        except ValueError as exc:
            parser.error(str(exc))
        key_id, key = _run(url, lambda engine: create_key_async(engine, namespaces, args.name))
        print(key)
        print(f"key id {key_id}, namespaces {', '.join(namespaces)}: store the key now, it is not shown again",
              file=sys.stderr)
        return 0
    if args.command == "list":
        for row in _run(url, list_keys_async):
            state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
            print(f"{row['key_id']}\t{','.join(row['namespaces'])}\t{state}\t"
                  f"{row['created_at']:%Y-%m-%d %H:%M}\t{row['name'] or ''}")
        return 0
    if _run(url, lambda engine: revoke_key_async(engine, args.key_id)):
        print(f"revoked {args.key_id}")
        return 0
    print(f"no active key {args.key_id}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
