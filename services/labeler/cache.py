"""The label cache: one cluster's LLM labels, reused while `cache_ttl_seconds` lasts.

The key hashes what the labels were made from: the cluster's representative documents
(their sample texts and media URLs, in order) and everything in the configuration that
shapes the answer (provider, model, prompt, response shape, flags, parameters, input
mappings). A later run whose cluster shows the LLM the same documents under the same
configuration gets the same labels without a call. Only labels that the LLM produced
and that passed validation are cached; fallback labels never are.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clusterflow.db.schema import label_cache
from contracts.api import LLMLabeling
from services.labeler.texts import MemberContent

CACHE_VERSION = 1


def config_fingerprint(config: LLMLabeling, *, provider: str, model: str) -> dict[str, Any]:
    return {
        "v": CACHE_VERSION,
        "provider": provider,
        "model": model,
        "custom_prompt": config.custom_prompt,
        "response_shape": config.response_shape,
        "include_summary": config.include_summary,
        "include_keywords": config.include_keywords,
        "sample_text_max_length": config.sample_text_max_length,
        "max_samples_per_cluster": config.max_samples_per_cluster,
        "use_embedding_dedup": config.use_embedding_dedup,
        "embedding_similarity_threshold": config.embedding_similarity_threshold,
        "parameters": config.parameters,
        "labeling_inputs": config.labeling_inputs.model_dump(mode="json") if config.labeling_inputs else None,
    }


def cache_key(fingerprint: dict[str, Any], samples: Sequence[MemberContent], max_length: int) -> str:
    shown = [{"text": s.sample(max_length), "media": [m.url for m in s.media]} for s in samples]
    blob = json.dumps({"config": fingerprint, "samples": shown}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=str)
    return "lbl_" + hashlib.sha256(blob.encode()).hexdigest()


class LabelCache(Protocol):
    async def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]: ...
    async def put_many(self, entries: dict[str, dict[str, Any]], *, model: str, ttl_seconds: int) -> None: ...


class PostgresLabelCache:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(label_cache.c.cache_key, label_cache.c.labels)
                .where(label_cache.c.cache_key.in_(list(keys)), label_cache.c.expires_at > func.now()))
            return {row.cache_key: row.labels for row in rows}

    async def put_many(self, entries: dict[str, dict[str, Any]], *, model: str, ttl_seconds: int) -> None:
        if not entries or ttl_seconds <= 0:
            return
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl_seconds)
        statement = pg_insert(label_cache).values([
            {"cache_key": key, "labels": value, "model": model, "expires_at": expires}
            for key, value in entries.items()
        ])
        statement = statement.on_conflict_do_update(
            index_elements=[label_cache.c.cache_key],
            set_={"labels": statement.excluded.labels, "model": statement.excluded.model,
                  "expires_at": statement.excluded.expires_at, "created_at": func.now()},
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)
            # Expired entries are dead weight: drop them while we are here.
            await conn.execute(delete(label_cache).where(label_cache.c.expires_at <= func.now()))
