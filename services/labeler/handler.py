"""ExecutionClustered -> group labels -> ClustersLabeled, for every run.

What is labelled are the run's groups of points ("cl_<n>", `group_id`: docs/vocabulary.md);
the prose below, the prompt and the REST surface call them clusters, as users do.

The labeler always answers: the status projector completes a run without labels when
none were asked for and merges the labels when they arrive, so every run gets names.

1. Read the members table; keep each cluster's members nearest the centroid (at most
   `labeler_members_per_cluster`, `labeler_members_total` over the run), and read the
   payloads of those members only, from the collections of the run's cluster.
2. c-TF-IDF keywords for every cluster (cheap): the labels when LLM labeling is off
   or its provider has no API key, the fallback of any cluster the LLM fails, and a
   hint in the prompt.
3. A cluster whose centroid already has a label keeps it and is not labelled again:
   the clusterer gave it (a cluster that kept its stable id from the previous run, an
   assign run's source clusters); the LLM is told those labels are taken.
4. With LLM labeling, for the others: representatives (near the centroid and spread
   across it, by the dataset vectors), the cache looked up, the rest labelled by the
   provider in batches (`labeling.Conversation`), cached.
5. Near-duplicate labels are relabelled (the LLM asked again with the taken labels,
   then the next distinguishing keyword; inherited labels never change); noise is
   labelled "Noise".
6. A run with a hierarchy (topics over its clusters, on its centroids) gets a label
   for every topic, once the clusters have theirs: c-TF-IDF keywords among the
   topic's level (`hierarchy_labels.py`), and with LLM labeling the LLM, shown the topic's
   subtopics and a sample of their documents. Every label of the run is distinct.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clusterflow.idempotency import ProcessedLog
from clusterflow.messaging import Publisher, heartbeat, report_status
from clusterflow.storage import artifact_key
from contracts.api import LLMLabeling, LLMProvider, TaskStatusEnum, provider_for_model
from contracts.events import ClusterLabel, ClustersLabeled, ExecutionClustered, derived_event_id
from contracts.topics import EXECUTION_LABELED
from services.labeler import cache as label_cache
from services.labeler import ctfidf, dedup, hierarchy_labels, representatives, shape
from services.labeler.cache import LabelCache
from services.labeler.dedup import Embedder
from services.labeler.labeling import Conversation
from services.labeler.prompts import GroupBrief
from services.labeler.providers import LLMClient
from services.labeler.settings import LabelerSettings
from services.labeler.sources import DocumentSource, ResultsSource
from services.labeler.texts import MemberContent, extract, literal_context

SERVICE = "labeler"
NOISE = representatives.NOISE
log = logging.getLogger("clusterflow.labeler")

# (provider, model) -> a client, or None when the provider has no API key.
LLMFactory = Callable[[LLMProvider, str], LLMClient | None]


@dataclass
class Draft:
    """A group's label in the making."""

    group_id: str
    size: int
    label: str
    summary: str | None
    keywords: list[str]
    source: str  # "llm", "cache", "ctfidf" or "inherited"
    metadata: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    settled: bool = False  # made distinct by a keyword: only an exact repeat is a duplicate

    def to_label(self, extra: dict[str, Any]) -> ClusterLabel:
        how = {"source": self.source, **(extra if self.source != "inherited" else {})}
        return ClusterLabel(group_id=self.group_id, label=self.label, summary=self.summary,
                            keywords=self.keywords, metadata={**self.metadata, "labeling": how})


@dataclass
class LLMRun:
    """The LLM side of one run: the conversation and what each cluster showed it."""

    conversation: Conversation
    briefs: dict[str, GroupBrief]
    model: str


@dataclass
class RunStats:
    clusters: int = 0
    inherited: int = 0  # kept the label the clusterer gave them
    llm_calls: int = 0
    cache_hits: int = 0
    relabeled: int = 0
    dedup_method: str | None = None
    seconds: float = 0.0
    # What the provider was not sent as asked (a retired model's successor, a refused
    # parameter, media it cannot fetch): the run's `llm_labeling_warnings`.
    warnings: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        """What the task's `additional_data` shows of the labeling."""
        counts = {k: getattr(self, k) for k in ("clusters", "inherited", "llm_calls", "cache_hits", "relabeled",
                                                 "dedup_method")}
        out: dict[str, Any] = {"labeling_stats": {**counts, "seconds": round(self.seconds, 3)}}
        if self.warnings:
            out["llm_labeling_warnings"] = self.warnings
        return out


def choose_model(config: LLMLabeling, settings: LabelerSettings) -> tuple[LLMProvider, str]:
    """The provider and model to call: the run's model, else the provider's default,
    else the reference's default (Gemini) or the first provider with a key."""
    if config.model_name is not None:
        return provider_for_model(config.model_name), config.model_name.value
    provider = config.provider
    if provider is None:
        keyed = [p for p in (LLMProvider.google, LLMProvider.openai, LLMProvider.anthropic) if settings.api_key(p)]
        provider = keyed[0] if keyed else LLMProvider.google
    return provider, settings.default_model(provider)


@dataclass
class Labeler:
    results: ResultsSource
    documents: DocumentSource
    publisher: Publisher
    processed: ProcessedLog
    cache: LabelCache
    llm: LLMFactory
    settings: LabelerSettings  # the composition root's (app.py); never read from the environment here
    embedder: Embedder | None = None

    async def handle(self, event: ExecutionClustered) -> None:
        if await self.processed.seen(SERVICE, event.event_id):
            return
        await report_status(self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING,
                            stage="labeling", progress=0.9, message=f"labeling {event.num_clusters} clusters")
        async with heartbeat(self.publisher, event, service=SERVICE, stage="labeling", start=0.9, end=0.9,
                             every_s=self.settings.heartbeat_seconds):
            labeled, stats = await self.label(event)
        await report_status(
            self.publisher, event, service=SERVICE, status=TaskStatusEnum.PROCESSING, stage="labeled",
            progress=0.98,
            message=(f"labeled {stats.clusters} clusters in {stats.seconds:.2f}s ({stats.inherited} inherited, "
                     f"{stats.llm_calls} LLM calls, {stats.cache_hits} cached, "
                     f"{len(labeled.llm_labeling_errors)} errors)"),
            details=stats.details(),
        )
        await self.publisher.publish(EXECUTION_LABELED, labeled)
        await self.processed.mark(SERVICE, event.event_id)

    async def label(self, event: ExecutionClustered) -> tuple[ClustersLabeled, RunStats]:
        started = time.perf_counter()
        config = event.config.llm_labeling
        flags = config or LLMLabeling()  # the defaults (summary, keywords, dedup) when none was given

        members = await asyncio.to_thread(self.results.members, event.artifacts.members_key)
        pools = representatives.pools(members, self.settings.labeler_members_per_cluster,
                                      self.settings.labeler_members_total)
        noise = int((members["cluster_id"] == NOISE).sum())
        del members
        contents = await self._contents(event, pools, config)
        texts = {p.group_id: [contents[i].text for i in p.ids if i in contents] for p in pools}
        keywords = await asyncio.to_thread(ctfidf.class_tfidf, texts, 10)
        drafts = self._fallback(pools, contents, keywords, flags)
        inherited = self._inherit(event, drafts)
        to_label = [p for p in pools if p.group_id not in inherited]

        stats = RunStats(clusters=len(pools), inherited=len(inherited))
        errors: list[dict[str, Any]] = []
        client, extra = self._client(event, config) if to_label else (None, {})
        llm_run: LLMRun | None = None
        try:
            if client is not None and config is not None:
                llm_run = await self._llm_labels(event, config, client, to_label, contents, keywords, drafts,
                                                 errors, stats)
            stats.dedup_method = await self._dedup(drafts, keywords, flags, llm_run, stats)
            drafts.extend(await self._topics(event, config, texts, pools, contents, drafts, flags, llm_run, errors))
        finally:
            if client is not None:
                stats.warnings = list(client.notes)
                await client.aclose()
        if llm_run is not None:
            await self._store(config, drafts, llm_run.model)
            stats.llm_calls = llm_run.conversation.calls

        labels = [d.to_label(extra) for d in drafts]
        if noise:
            labels.append(ClusterLabel(group_id=NOISE, label="Noise",
                                       summary=f"{noise:,} documents not assigned to any cluster",
                                       keywords=[], metadata={"labeling": {"source": "rule"}}))
        stats.seconds = time.perf_counter() - started
        log.info("run %s: labeled %d clusters in %.2fs (%d inherited, %d LLM calls, %d cached, %d errors, "
                 "dedup %s)", event.run_id, stats.clusters, stats.seconds, stats.inherited, stats.llm_calls,
                 stats.cache_hits, len(errors), stats.dedup_method)
        return ClustersLabeled(
            event_id=derived_event_id(event.run_id, EXECUTION_LABELED.name),
            namespace=event.namespace, run_id=event.run_id, cluster_id=event.cluster_id, task_id=event.task_id,
            labels=labels, llm_labeling_errors=errors,
        ), stats

    async def _contents(self, event: ExecutionClustered, pools: list[representatives.GroupPool],
                        config: LLMLabeling | None) -> dict[str, MemberContent]:
        """The text and media of the pooled members, from their payloads in the run
        cluster's collections (only the pooled members: never a whole cluster)."""
        collection_ids = await self.documents.collection_ids(event.namespace, event.cluster_id)
        wanted = [i for p in pools for i in p.ids]
        payloads = await self.documents.payloads(collection_ids, wanted)
        mappings = config.labeling_inputs.input_mappings if config and config.labeling_inputs else None
        return {i: extract(i, payloads[i], mappings) for i in wanted if i in payloads}

    @staticmethod
    def _inherit(event: ExecutionClustered, drafts: list[Draft]) -> set[str]:
        """The clusters that already have their label: the clusterer put it on their
        centroid (a cluster that kept its stable id, an assign run's source clusters).
        They keep it and are not labelled again; they go first, so that deduplication
        changes the new labels, never theirs. Returns their cluster ids."""
        before = {c.group_id: c for c in event.centroids if c.label and c.group_id != NOISE}
        for draft in drafts:
            kept = before.get(draft.group_id)
            if kept is not None:
                draft.label, draft.summary, draft.keywords = kept.label, kept.summary, list(kept.keywords)
                draft.source, draft.settled, draft.metadata = "inherited", True, {}
        drafts.sort(key=lambda d: d.source != "inherited")  # stable: largest first within each
        return {d.group_id for d in drafts if d.source == "inherited"}

    def _client(self, event: ExecutionClustered, config: LLMLabeling | None
                ) -> tuple[LLMClient | None, dict[str, Any]]:
        """The LLM client the run asks for, and what the labels' metadata says of it;
        no client when labeling is off or the provider has no API key."""
        if config is None or not config.enabled:
            return None, {}
        provider, model = choose_model(config, self.settings)
        client = self.llm(provider, model)
        if client is None:
            env = f"CLUSTERFLOW_{provider.value.upper()}_API_KEY"
            log.warning("run %s asked for LLM labels from %s, which has no API key (%s): labels come from "
                        "the documents' text", event.run_id, provider.value, env)
            return None, {"llm_skipped": f"no API key configured for provider {provider.value} ({env})"}
        how = {"provider": provider.value, "model": client.model}
        if client.model != model:
            how["model_requested"] = model
        return client, how

    # ------------------------------------------------------------------ c-TF-IDF

    def _fallback(self, pools: list[representatives.GroupPool], contents: dict[str, MemberContent],
                  keywords: dict[str, ctfidf.Keywords], flags: LLMLabeling) -> list[Draft]:
        candidates = {p.group_id: ctfidf.label_from_keywords(keywords[p.group_id].terms) or
                      f"Cluster {p.group_id.removeprefix('cl_')}" for p in pools}
        unique = ctfidf.unique_labels(candidates, {c: k.terms for c, k in keywords.items()})
        drafts = []
        for p in pools:
            terms = keywords[p.group_id].terms
            central = next((contents[i] for i in p.ids if i in contents and contents[i].title), None)
            summary = None
            if flags.include_summary:
                parts = []
                if central is not None:
                    parts.append(f"Most central document: {central.title}")
                if terms:
                    parts.append("key terms: " + ", ".join(terms[:5]))
                summary = "; ".join(parts) or None
            drafts.append(Draft(group_id=p.group_id, size=p.size, label=unique[p.group_id],
                                summary=summary, keywords=terms[:8] if flags.include_keywords else [],
                                source="ctfidf"))
        return drafts

    # ----------------------------------------------------------------------- LLM

    async def _llm_labels(self, event: ExecutionClustered, config: LLMLabeling, client: LLMClient,
                          pools: list[representatives.GroupPool], contents: dict[str, MemberContent],
                          keywords: dict[str, ctfidf.Keywords], drafts: list[Draft],
                          errors: list[dict[str, Any]], stats: RunStats) -> LLMRun:
        briefs = await self._briefs(event, config, pools, contents, keywords)
        schema = shape.item_schema(config)
        by_id = {d.group_id: d for d in drafts}
        fingerprint = label_cache.config_fingerprint(config, provider=client.provider.value, model=client.model)
        max_len = config.sample_text_max_length
        for brief in briefs:
            if brief.samples:
                by_id[brief.group_id].cache_key = label_cache.cache_key(fingerprint, brief.samples, max_len)

        cached: dict[str, dict[str, Any]] = {}
        if config.cache_ttl_seconds > 0:
            cached = await self.cache.get_many([d.cache_key for d in drafts if d.cache_key])
        for draft in drafts:
            hit = cached.get(draft.cache_key or "")
            if hit is not None:
                draft.label, draft.summary = hit["label"], hit.get("summary")
                draft.keywords, draft.metadata = list(hit.get("keywords") or []), dict(hit.get("metadata") or {})
                draft.source = "cache"
                draft.settled = bool(hit.get("settled", False))
                stats.cache_hits += 1

        conversation = Conversation(
            client=client, item_schema=schema, sample_max_length=max_len,
            parameters=dict(config.parameters), custom_prompt=config.custom_prompt,
            context=literal_context(config),
            clusters_per_call=self.settings.llm_clusters_per_call,
            prompt_max_chars=self.settings.llm_prompt_max_chars,
        )
        # A cluster with nothing to show (its documents deleted since) keeps its text label.
        todo = [b for b in briefs if b.samples and by_id[b.group_id].source != "cache"]
        taken = [d.label for d in drafts if d.source in ("cache", "inherited")]
        outputs, failed = await conversation.label(todo, taken)
        errors.extend(failed)
        for cid, output in outputs.items():
            self._apply(by_id[cid], output, schema, config, keywords[cid].terms)
        return LLMRun(conversation, {b.group_id: b for b in briefs}, client.model)

    async def _briefs(self, event: ExecutionClustered, config: LLMLabeling,
                      pools: list[representatives.GroupPool], contents: dict[str, MemberContent],
                      keywords: dict[str, ctfidf.Keywords]) -> list[GroupBrief]:
        counts = representatives.sample_counts(pools, config.max_samples_per_cluster)
        # Members with something to show, nearest first.
        shown = {p.group_id: [i for i in p.ids if i in contents and (contents[i].text or contents[i].media)]
                 for p in pools}
        vectors: dict[str, Any] = {}
        if any(len(shown[p.group_id]) > counts[p.group_id] for p in pools):
            dataset = artifact_key(event.namespace, event.cluster_id, event.run_id, "manifest")
            try:
                vectors = await asyncio.to_thread(self.results.vectors, dataset,
                                                  [i for ids in shown.values() for i in ids])
            except Exception as exc:  # noqa: BLE001 - spread is a refinement; nearest-only still works
                log.warning("run %s: dataset vectors unreadable (%r); representatives are the nearest members",
                            event.run_id, exc)
        briefs = []
        for p in pools:
            ids = shown[p.group_id]
            matrix = None
            if ids and all(i in vectors for i in ids):
                matrix = np.stack([vectors[i] for i in ids])
            chosen = representatives.select(ids, matrix, counts[p.group_id])
            briefs.append(GroupBrief(group_id=p.group_id, size=p.size,
                                       samples=[contents[i] for i in chosen],
                                       keywords=keywords[p.group_id].terms))
        return briefs

    @staticmethod
    def _apply(draft: Draft, output: dict[str, Any], schema: dict[str, Any], config: LLMLabeling,
               terms: list[str]) -> None:
        label = shape.label_of(output, schema)
        if label:
            draft.label = label
        if config.include_summary and isinstance(output.get("summary"), str):
            draft.summary = output["summary"]
        if config.include_keywords:
            given = output.get("keywords")
            if isinstance(given, list) and all(isinstance(k, str) for k in given) and given:
                draft.keywords = given
            else:
                draft.keywords = terms[:8]
        draft.metadata = dict(output) if config.response_shape is not None else {}
        draft.source = "llm"

    # -------------------------------------------------------------------- topics

    async def _topics(self, event: ExecutionClustered, config: LLMLabeling | None, texts: dict[str, list[str]],
                      pools: list[representatives.GroupPool], contents: dict[str, MemberContent],
                      drafts: list[Draft], flags: LLMLabeling, llm_run: LLMRun | None,
                      errors: list[dict[str, Any]]) -> list[Draft]:
        """Drafts for the topics of the run's hierarchy (none without one)."""
        tree = hierarchy_labels.Tree.from_centroids(event.centroids)
        if not tree.children:
            return []
        labels = {d.group_id: d.label for d in drafts}
        sizes = {c.group_id: c.num_members for c in event.centroids}
        out: list[Draft] = []
        # Deepest first: a topic's children are labelled (and named to it) before it.
        for depth in tree.depths:
            keywords = await asyncio.to_thread(hierarchy_labels.topic_keywords, tree, texts, labels, depth)
            keywords = dict(sorted(keywords.items(), key=lambda kv: -sizes.get(kv[0], 0)))
            unique = hierarchy_labels.topic_labels(keywords, labels.values())
            made = []
            for t in keywords:
                subtopics = [labels.get(c, c) for c in tree.children[t]]
                terms = keywords[t].terms
                summary = None
                if flags.include_summary:
                    summary = "; ".join(p for p in ("subtopics: " + "; ".join(subtopics),
                                                     "key terms: " + ", ".join(terms[:5]) if terms else "") if p)
                made.append(Draft(group_id=t, size=sizes.get(t, 0), label=unique[t], summary=summary,
                                  keywords=terms[:8] if flags.include_keywords else [], source="ctfidf"))
            if llm_run is not None and config is not None and not llm_run.conversation.broken:
                await self._llm_topics(tree, config, llm_run, made, pools, contents, keywords, labels, errors)
            used = {label.casefold() for cid, label in labels.items()}
            for draft in made:  # exact repeats only: a topic may be near its subtopic's name, never equal
                if draft.label.casefold() in used:
                    draft.label = ctfidf.disambiguate(draft.label, keywords[draft.group_id].terms, used)
                used.add(draft.label.casefold())
                labels[draft.group_id] = draft.label
            out.extend(made)
        return out

    async def _llm_topics(self, tree: hierarchy_labels.Tree, config: LLMLabeling, llm_run: LLMRun, made: list[Draft],
                          pools: list[representatives.GroupPool], contents: dict[str, MemberContent],
                          keywords: dict[str, ctfidf.Keywords], labels: dict[str, str],
                          errors: list[dict[str, Any]]) -> None:
        """The LLM names one level's topics: each shows its subtopics' labels and the
        documents nearest each of its clusters' centroids."""
        nearest = {p.group_id: [contents[i] for i in p.ids if i in contents] for p in pools}
        briefs = []
        for draft in made:
            leaves = tree.leaves_of(draft.group_id)
            per_leaf = max(1, (config.max_samples_per_cluster or 10) // len(leaves))
            samples = [s for leaf in leaves for s in nearest.get(leaf, [])[:per_leaf]]
            briefs.append(GroupBrief(group_id=draft.group_id, size=draft.size, samples=samples[:20],
                                       keywords=keywords[draft.group_id].terms,
                                       subtopics=[labels.get(c, c) for c in tree.children[draft.group_id]]))
        conversation = llm_run.conversation
        outputs, failed = await conversation.label([b for b in briefs if b.samples], list(labels.values()))
        errors.extend(failed)
        by_id = {d.group_id: d for d in made}
        for cid, output in outputs.items():
            self._apply(by_id[cid], output, conversation.item_schema, config, keywords[cid].terms)
            llm_run.briefs[cid] = next(b for b in briefs if b.group_id == cid)

    # --------------------------------------------------------------------- dedup

    async def _dedup(self, drafts: list[Draft], keywords: dict[str, ctfidf.Keywords], flags: LLMLabeling,
                     llm_run: LLMRun | None, stats: RunStats) -> str | None:
        """Relabel near-duplicates (drafts are largest cluster first: the larger keeps its label)."""
        if len(drafts) < 2:
            return None
        embedder = self.embedder if (flags.use_embedding_dedup and self.settings.labeler_embedding_model) else None
        threshold = flags.embedding_similarity_threshold
        semantic = flags.use_embedding_dedup

        similarity = dedup.Similarity(embedder)  # one per run: label embeddings computed once
        result = await asyncio.to_thread(dedup.find_duplicates, [d.label for d in drafts], threshold,
                                         semantic=semantic, similarity=similarity,
                                         settled=[i for i, d in enumerate(drafts) if d.settled])
        if not result.duplicates:
            return result.method
        stats.relabeled = len(result.duplicates)
        pending = {d.index for d in result.duplicates}

        if llm_run is not None and not llm_run.conversation.broken:
            # Ask the LLM again for the duplicates, every kept label forbidden.
            conversation = llm_run.conversation
            targets = [llm_run.briefs[drafts[i].group_id] for i in sorted(pending)
                       if drafts[i].group_id in llm_run.briefs]
            kept = [d.label for i, d in enumerate(drafts) if i not in pending]
            note = "these labels were too close to other clusters' labels: " + "; ".join(
                f"{drafts[d.index].group_id} '{drafts[d.index].label}' ~ '{drafts[d.of].label}'"
                for d in result.duplicates)
            outputs = await conversation.relabel(targets, kept, note)
            for i in sorted(pending):
                draft = drafts[i]
                output = outputs.get(draft.group_id)
                new = shape.label_of(output, conversation.item_schema) if output else None
                if not new:
                    continue
                others = [d.label for j, d in enumerate(drafts) if j != i]
                close = await asyncio.to_thread(dedup.too_close, new, others, threshold, semantic=semantic,
                                                similarity=similarity)
                if not close:
                    draft.label = new
                    if flags.response_shape is not None and draft.source == "llm":
                        draft.metadata = dict(output)
                    pending.discard(i)

        used = {d.label.casefold() for i, d in enumerate(drafts) if i not in pending}
        for i in sorted(pending):
            draft = drafts[i]
            draft.label = ctfidf.disambiguate(draft.label, keywords[draft.group_id].terms, used)
            draft.settled = True
            used.add(draft.label.casefold())
        return result.method

    async def _store(self, config: LLMLabeling | None, drafts: list[Draft], model: str) -> None:
        """Cache the labels the LLM made this run (final, after dedup)."""
        if config is None or config.cache_ttl_seconds <= 0:
            return
        fresh = {d.cache_key: {"label": d.label, "summary": d.summary, "keywords": d.keywords,
                               "metadata": d.metadata, "settled": d.settled}
                 for d in drafts if d.source == "llm" and d.cache_key}
        if fresh:
            await self.cache.put_many(fresh, model=model, ttl_seconds=config.cache_ttl_seconds)

