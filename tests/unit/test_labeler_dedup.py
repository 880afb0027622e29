"""Near-duplicate labels: the lexical fallback, an injected embedder, and relabeling."""
from __future__ import annotations

import json

import numpy as np
import pytest

from contracts.api import LLMLabeling
from services.labeler import dedup
from services.labeler.dedup import find_duplicates, lexical_similarity, load_default_embedder
from tests.support.labeler_fakes import clustered_event, corpus, make_rig
from tests.support.llm_servers import FakeLLM, Reply


class TableEmbedder:
    """A fake embedder: labels in the same synonym group get the same direction."""

    name = "fake-synonyms"

    def __init__(self, groups: list[set[str]]) -> None:
        self.groups = groups
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.seen = getattr(self, "seen", {})
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            group = next((g for g, words in enumerate(self.groups) if text.casefold() in words), None)
            if group is None:  # any other label: a direction of its own
                group = self.seen.setdefault(text.casefold(), len(self.groups) + len(self.seen))
            out[i, group] = 1.0
        return out


def test_lexical_similarity_sees_variants_and_tells_different_labels_apart():
    assert lexical_similarity("Space Missions", "space mission") == pytest.approx(1.0)
    assert lexical_similarity("News Stories", "News Story") == pytest.approx(1.0)
    assert lexical_similarity("Space Exploration", "Space Exploration Missions") >= 0.8
    assert lexical_similarity("Space Exploration", "Home Cooking") < 0.3
    assert lexical_similarity("Rocket Launches", "Football Matches") < 0.3


def test_the_lexical_fallback_keeps_the_first_and_flags_the_later_near_duplicates():
    result = find_duplicates(["Space Exploration", "Home Cooking", "Space Exploration Missions",
                              "HOME COOKING"], threshold=0.8)
    assert result.method == "lexical"
    assert [(d.index, d.of) for d in result.duplicates] == [(2, 0), (3, 1)]


def test_an_injected_embedder_finds_synonyms_the_lexical_measure_misses():
    labels = ["Soccer Matches", "Baking Recipes", "Football Games"]
    assert find_duplicates(labels, 0.8).duplicates == []  # no shared words
    embedder = TableEmbedder([{"soccer matches", "football games"}])
    result = find_duplicates(labels, 0.8, embedder=embedder)
    assert result.method == "embedding:fake-synonyms"
    assert [(d.index, d.of, d.similarity) for d in result.duplicates] == [(2, 0, 1.0)]


def test_a_broken_embedder_falls_back_to_the_lexical_measure():
    class Broken:
        name = "broken"

        def embed(self, texts):
            raise RuntimeError("model files missing")

    result = find_duplicates(["Space Missions", "Space Mission"], 0.8, embedder=Broken())
    assert result.method == "lexical" and len(result.duplicates) == 1


def test_semantic_dedup_off_only_catches_exact_repeats():
    result = find_duplicates(["Space Missions", "Space Mission", "space missions"], 0.8, semantic=False)
    assert result.method == "exact" and [d.index for d in result.duplicates] == [2]


def test_the_packaged_model_when_installed():
    # An optional extra: when it is there, it must load and rank synonyms close.
    embedder = load_default_embedder()
    if embedder is None:
        assert dedup.find_duplicates(["a b", "c d"], 0.8).method == "lexical"
        return
    vectors = embedder.embed(["soccer matches", "football games", "chocolate cake recipes"])
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]


def _reply(labels: dict[str, str]) -> str:
    return json.dumps({"clusters": [{"cluster_id": c, "label": l, "summary": f"About {l}.", "keywords": [l]}
                                    for c, l in labels.items()]})


async def test_the_llm_is_asked_again_for_near_duplicates_with_the_taken_labels():
    c = corpus(per_topic=30)
    fake = FakeLLM()
    fake.push(Reply(_reply({"cl_0": "Space Missions", "cl_1": "Home Cooking", "cl_2": "Space Mission",
                            "cl_3": "Markets"})),
              Reply(_reply({"cl_2": "Football Results"})))
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(
        enabled=True, model_name="gpt-4o-mini-2024-07-18")))
    labels = {l.group_id: l.label for l in rig.labeled().labels}
    assert labels == {"cl_0": "Space Missions", "cl_1": "Home Cooking", "cl_2": "Football Results",
                      "cl_3": "Markets"}
    second = fake.requests[1].prompt
    assert "too close to other clusters' labels: cl_2 'Space Mission' ~ 'Space Missions'" in second
    assert '"Space Missions"' in second and "### Cluster cl_2" in second and "### Cluster cl_0" not in second
    assert rig.stats()["relabeled"] == 1 and rig.labeled().llm_labeling_errors == []


async def test_a_duplicate_the_llm_cannot_fix_gets_its_next_distinguishing_keyword():
    c = corpus(per_topic=30)
    fake = FakeLLM()
    fake.push(Reply(_reply({"cl_0": "News Stories", "cl_1": "Kitchen", "cl_2": "News Story", "cl_3": "Money"})),
              Reply(_reply({"cl_2": "News Stories"})))  # still the same
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(
        enabled=True, model_name="gpt-4o-mini-2024-07-18")))
    labels = {l.group_id: l.label for l in rig.labeled().labels}
    assert labels["cl_0"] == "News Stories"
    assert labels["cl_2"].startswith("News Story (") and labels["cl_2"] != "News Story"
    keyword = labels["cl_2"].removeprefix("News Story (").rstrip(")").casefold()
    football = " ".join(p["text"].casefold() for d, p in c.payloads.items() if d.startswith("football"))
    assert keyword in football  # a c-TF-IDF keyword of the football cluster


async def test_the_embedder_is_used_through_the_port_in_a_run():
    c = corpus(per_topic=30)
    fake = FakeLLM()
    fake.push(Reply(_reply({"cl_0": "Spaceflight", "cl_1": "Cooking", "cl_2": "Astronautics", "cl_3": "Money"})),
              Reply(_reply({"cl_2": "Football"})))
    embedder = TableEmbedder([{"spaceflight", "astronautics"}])
    rig = make_rig(c, fake, embedder=embedder)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(
        enabled=True, model_name="claude-haiku-4-5-20251001")))
    labels = {l.group_id: l.label for l in rig.labeled().labels}
    assert labels["cl_2"] == "Football" and embedder.calls >= 2
    assert rig.stats()["dedup_method"] == "embedding:fake-synonyms"
