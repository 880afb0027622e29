"""One run's conversation with the LLM: batches of clusters, replies checked against
the item schema, one corrective retry, and errors recorded per cluster.

- Clusters go `clusters_per_call` at a time (and within a prompt-size budget), in
  order, each batch told the labels already taken by the batches before it.
- A reply that is not JSON, lacks a cluster, or whose entry does not match the schema
  is asked for again once, for the failing clusters only, with what was wrong; what
  still fails becomes an `llm_labeling_errors` entry (the group's id, under the REST
  name `cluster_id`; error, an excerpt of the raw reply) and the caller falls back to the c-TF-IDF label for that cluster.
- A provider failure (refused request, or retries exhausted) ends the conversation:
  the remaining clusters are not sent, each gets an error entry.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.labeler import shape
from services.labeler.prompts import (
    GroupBrief,
    Prompt,
    ReplyError,
    build_prompt,
    excerpt,
    parse_reply,
    strip_cluster_id,
)
from services.labeler.providers import LLMClient, LLMError

log = logging.getLogger("clusterflow.labeler")


@dataclass
class Conversation:
    client: LLMClient
    item_schema: dict[str, Any]
    sample_max_length: int
    parameters: dict[str, Any] = field(default_factory=dict)
    custom_prompt: str | None = None
    context: Sequence[tuple[str, str]] = ()
    clusters_per_call: int = 10
    prompt_max_chars: int = 60_000
    calls: int = 0
    broken: str | None = None  # why the provider is no longer called
    prompts: list[Prompt] = field(default_factory=list)  # what was sent, for tests and logs

    async def label(self, briefs: Sequence[GroupBrief], taken: Sequence[str]
                    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """Validated outputs by cluster id, and the errors of the clusters without one."""
        outputs: dict[str, dict[str, Any]] = {}
        errors: list[dict[str, Any]] = []
        taken = list(taken)
        for batch in self._batches(briefs):
            got, failed = await self._batch(batch, taken)
            outputs.update(got)
            errors.extend(failed)
            taken.extend(label for output in got.values()
                         if (label := shape.label_of(output, self.item_schema)))
        return outputs, errors

    async def relabel(self, briefs: Sequence[GroupBrief], taken: Sequence[str], note: str
                      ) -> dict[str, dict[str, Any]]:
        """Ask once more for clusters whose labels came out too close to others'."""
        if self.broken or not briefs:
            return {}
        prompt = self._prompt(briefs, taken, correction=note)
        try:
            text = await self._call(prompt)
        except LLMError as exc:
            log.warning("relabeling near-duplicates failed: %s", exc)
            return {}
        got, _ = self._read(text, [b.group_id for b in briefs])
        return got

    # ------------------------------------------------------------------ internals

    def _batches(self, briefs: Sequence[GroupBrief]) -> list[list[GroupBrief]]:
        batches: list[list[GroupBrief]] = []
        current: list[GroupBrief] = []
        size = 0
        for brief in briefs:
            cost = 200 + sum(min(len(s.text), self.sample_max_length) + 40 for s in brief.samples)
            if current and (len(current) >= self.clusters_per_call or size + cost > self.prompt_max_chars):
                batches.append(current)
                current, size = [], 0
            current.append(brief)
            size += cost
        if current:
            batches.append(current)
        return batches

    def _prompt(self, briefs: Sequence[GroupBrief], taken: Sequence[str], correction: str | None = None) -> Prompt:
        return build_prompt(
            briefs, item_schema=self.item_schema, sample_max_length=self.sample_max_length,
            taken_labels=taken, custom_prompt=self.custom_prompt, context=self.context,
            correction=correction, with_media=True,
        )

    async def _call(self, prompt: Prompt) -> str:
        self.calls += 1
        self.prompts.append(prompt)
        reply = await self.client.complete(prompt, self.parameters)
        return reply.text

    def _error(self, group_id: str, error: str, raw: str | None) -> dict[str, Any]:
        entry = {"cluster_id": group_id, "error": error,
                 "provider": self.client.provider.value, "model": self.client.model}
        if raw is not None:
            entry["raw_reply"] = excerpt(raw)
        return entry

    def _read(self, text: str, ids: Sequence[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        try:
            items = parse_reply(text, ids)
        except ReplyError as exc:
            return {}, {cid: str(exc) for cid in ids}
        good: dict[str, dict[str, Any]] = {}
        bad: dict[str, str] = {}
        for cid in ids:
            item = items.get(cid)
            if not isinstance(item, dict):
                bad[cid] = "the reply has no entry for this cluster" if item is None else "the entry is not an object"
                continue
            output = strip_cluster_id(item)
            problems = shape.validate(output, self.item_schema)
            if problems:
                bad[cid] = "the entry does not match the schema: " + "; ".join(problems[:5])
            else:
                good[cid] = output
        return good, bad

    async def _batch(self, batch: list[GroupBrief], taken: Sequence[str]
                     ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        ids = [b.group_id for b in batch]
        if self.broken:
            return {}, [self._error(cid, f"not sent: {self.broken}", None) for cid in ids]
        try:
            text = await self._call(self._prompt(batch, taken))
        except LLMError as exc:
            self.broken = str(exc)
            return {}, [self._error(cid, str(exc), exc.body) for cid in ids]
        good, bad = self._read(text, ids)
        if not bad:
            return good, []

        # One more try for what failed, saying what was wrong.
        retry = [b for b in batch if b.group_id in bad]
        problems = "; ".join(f"{cid}: {why}" for cid, why in bad.items())
        log.info("labeler: %d cluster(s) not usable in the reply, asking again: %s", len(bad), problems[:300])
        first_text = text
        try:
            text = await self._call(self._prompt(retry, [*taken, *(
                label for o in good.values() if (label := shape.label_of(o, self.item_schema)))],
                correction=problems[:2000]))
        except LLMError as exc:
            self.broken = str(exc)
            return good, [self._error(cid, f"{bad[cid]} (the retry failed: {exc})", first_text) for cid in bad]
        good2, bad2 = self._read(text, [b.group_id for b in retry])
        good.update(good2)
        return good, [self._error(cid, f"{why} (after one retry)", text) for cid, why in bad2.items()]
