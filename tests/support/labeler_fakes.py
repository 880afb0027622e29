"""A labeler over the in-memory ports of tests/fakes, and a small topical corpus to label.

`corpus()` builds documents on four topics (space, cooking, football, finance) with
vectors grouped by topic, and the members / dataset tables the clusterer would write.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from contracts.events import ClusteringConfig, ExecutionClustered, ResultArtifacts, derived_event_id
from tests.fakes import (  # noqa: F401 - the labeler's ports, shared with tests/fakes
    MemoryCache,
    MemoryDocuments,
    MemoryProcessed,
    MemoryResults,
    RecordingPublisher,
)

TOPICS: dict[str, dict[str, list[str]]] = {
    "space": {
        "subjects": ["The rocket", "NASA's probe", "The orbiter", "A lunar lander", "The telescope",
                     "The astronaut crew"],
        "verbs": ["launched toward", "entered orbit around", "photographed", "landed on", "studied"],
        "objects": ["Mars", "the Moon", "Jupiter's moons", "a distant galaxy", "the asteroid belt",
                    "the space station"],
        "tails": ["after a delayed rocket launch", "during the orbital mission", "with a new spacecraft engine",
                  "as mission control watched"],
    },
    "cooking": {
        "subjects": ["This recipe", "The chef", "Grandma's pasta sauce", "A simple bread dough",
                     "The roasted vegetables", "Our chocolate cake"],
        "verbs": ["needs", "is baked with", "is seasoned with", "simmers with", "is cooked with"],
        "objects": ["garlic and olive oil", "fresh basil", "butter and flour", "roasted tomatoes",
                    "a pinch of salt", "dark chocolate"],
        "tails": ["in a hot oven", "for a quick weeknight dinner", "before serving the recipe",
                  "in a cast iron skillet"],
    },
    "football": {
        "subjects": ["The striker", "The home team", "The goalkeeper", "The league leaders", "The coach",
                     "The midfielder"],
        "verbs": ["scored against", "defeated", "drew with", "lost to", "celebrated a win over"],
        "objects": ["the rival club", "the champions", "the visiting side", "a promoted team",
                    "the cup holders"],
        "tails": ["in a late penalty", "after extra time in the match", "in front of the stadium crowd",
                  "to top the league table"],
    },
    "finance": {
        "subjects": ["The central bank", "Stock markets", "Investors", "The bond market", "Bank shares",
                     "The inflation report"],
        "verbs": ["raised", "worried about", "reacted to", "priced in", "rallied on"],
        "objects": ["interest rates", "quarterly earnings", "the inflation outlook", "bond yields",
                    "the dollar exchange rate"],
        "tails": ["as stock prices fell", "ahead of the earnings season", "amid recession fears",
                  "after the interest rate decision"],
    },
}


def sentence(topic: str, rng: random.Random) -> tuple[str, str]:
    t = TOPICS[topic]
    subject, verb, obj, tail = (rng.choice(t[k]) for k in ("subjects", "verbs", "objects", "tails"))
    title = f"{subject} {verb} {obj}"
    return title, f"{title} {tail}."


@dataclass
class Corpus:
    payloads: dict[str, dict[str, Any]]
    members: pl.DataFrame
    dataset: pl.DataFrame
    topic_of: dict[str, str]  # cluster id -> topic


def corpus(per_topic: int = 40, topics: Sequence[str] = ("space", "cooking", "football", "finance"),
           dim: int = 16, seed: int = 7, noise: int = 0, image_urls: bool = False) -> Corpus:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    payloads: dict[str, dict[str, Any]] = {}
    ids, clusters, distances, vectors = [], [], [], []
    topic_of = {}
    for c, topic in enumerate(topics):
        center = nrng.normal(size=dim) * 5
        topic_of[f"cl_{c}"] = topic
        for i in range(per_topic):
            doc_id = f"{topic}-{i:04d}"
            title, text = sentence(topic, rng)
            payloads[doc_id] = {"title": title, "text": text, "views": rng.randint(1, 999), "doc_ref": f"ref_{i:08x}"}
            if image_urls:
                payloads[doc_id]["thumbnail_url"] = f"https://img.example.com/{doc_id}.jpg"
            v = center + nrng.normal(size=dim)
            ids.append(doc_id)
            clusters.append(f"cl_{c}")
            distances.append(float(np.linalg.norm(v - center)))
            vectors.append(v.astype(np.float32))
    for i in range(noise):
        doc_id = f"noise-{i:04d}"
        payloads[doc_id] = {"title": f"Unrelated note {i}", "text": "Assorted words about nothing in particular."}
        ids.append(doc_id)
        clusters.append("cl_-1")
        distances.append(float("nan"))
        vectors.append((nrng.normal(size=dim) * 10).astype(np.float32))
    members = pl.DataFrame({"document_id": ids, "cluster_id": clusters,
                            "distance_to_centroid": pl.Series(distances, dtype=pl.Float32)})
    dataset = pl.DataFrame({"document_id": ids,
                            "vector": pl.Series(np.stack(vectors), dtype=pl.Array(pl.Float32, dim))})
    return Corpus(payloads, members, dataset, topic_of)


def labeling_stats(publisher: "RecordingPublisher") -> dict[str, Any]:
    from contracts.topics import STATUS_CHANGED

    reports = [e for e in publisher.on(STATUS_CHANGED) if e.stage == "labeled"]
    assert reports, "the labeler reported no 'labeled' status"
    return reports[-1].details["labeling_stats"]


def clustered_event(members: pl.DataFrame, *, llm_labeling: Any = None, run_id: str = "run_test1",
                    cluster_id: str = "clu_test", namespace: str = "ns_test",
                    members_key: str | None = None, centroids_key: str | None = None) -> ExecutionClustered:
    counts = members.filter(pl.col("cluster_id") != "cl_-1")["cluster_id"].n_unique()
    return ExecutionClustered(
        event_id=derived_event_id(run_id, "clustering.execution.clustered"),
        namespace=namespace, run_id=run_id, cluster_id=cluster_id, task_id=f"task_{run_id}",
        artifacts=ResultArtifacts(
            members_key=members_key or f"{namespace}/{cluster_id}/{run_id}/members.parquet",
            centroids_key=centroids_key or f"{namespace}/{cluster_id}/{run_id}/centroids.parquet"),
        num_clusters=counts, num_points=members.height,
        noise_count=int((members["cluster_id"] == "cl_-1").sum()),
        config=ClusteringConfig(clustering_method="kmeans", embedding_name="text", llm_labeling=llm_labeling),
    )


@dataclass
class Rig:
    """A labeler over in-memory ports, talking to a FakeLLM in-process."""

    labeler: Any
    publisher: RecordingPublisher
    clients: Any  # services.labeler.app.LLMClients
    cache: MemoryCache
    documents: MemoryDocuments
    results: MemoryResults
    sleeps: list[float]

    def stats(self) -> dict[str, Any]:
        """The labeling stats the last run reported (its `labeled` status)."""
        return labeling_stats(self.publisher)

    def labeled(self) -> Any:
        from contracts.topics import EXECUTION_LABELED

        events = self.publisher.on(EXECUTION_LABELED)
        assert len(events) == 1, f"expected one ClustersLabeled, got {len(events)}"
        return events[0]


def make_rig(c: Corpus, fake: Any = None, *, keys: Sequence[str] = ("openai", "google", "anthropic"),
             cache: MemoryCache | None = None, embedder: Any = None, with_dataset: bool = True,
             **settings: Any) -> Rig:
    from services.labeler.app import LLMClients
    from services.labeler.handler import Labeler
    from services.labeler.settings import LabelerSettings
    from tests.support.llm_servers import API_KEY

    values: dict[str, Any] = {f"{k}_api_key": API_KEY for k in keys}
    values.update({f"{k}_base_url": "http://llm.test" for k in ("openai", "google", "anthropic")})
    values.update(settings)
    config = LabelerSettings(**values)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    clients = LLMClients(config, sleep=sleep, transport=fake.transport() if fake is not None else None)
    publisher = RecordingPublisher()
    cache = cache if cache is not None else MemoryCache()
    documents = MemoryDocuments(c.payloads)
    results = MemoryResults(c.members, c.dataset if with_dataset else None)
    labeler = Labeler(results=results, documents=documents, publisher=publisher, processed=MemoryProcessed(),
                      cache=cache, llm=clients, settings=config, embedder=embedder)
    return Rig(labeler, publisher, clients, cache, documents, results, sleeps)


def topic_words() -> dict[str, set[str]]:
    """Each topic's words that no other topic uses: a label made of them names its topic."""
    import re

    vocab = {t: set(re.findall(r"[a-z]+", " ".join(p for ps in parts.values() for p in ps).casefold()
                               .replace("'s", ""))) for t, parts in TOPICS.items()}
    return {t: words - set().union(*(w for o, w in vocab.items() if o != t)) for t, words in vocab.items()}
