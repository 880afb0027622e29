"""Labels through the whole system: offline labels by default, LLM labels through our
own provider server speaking each provider's protocol."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.e2e.conftest import wait_for_task
from tests.e2e.test_full_mode import create_cluster, execute

pytestmark = pytest.mark.e2e

TOPICS = {
    "astronomy": ["galaxy", "telescope", "nebula", "orbit", "planet", "comet", "star"],
    "cooking": ["recipe", "oven", "flour", "garlic", "simmer", "butter", "bake"],
    "football": ["goal", "striker", "penalty", "league", "referee", "midfield", "keeper"],
}


@pytest.fixture(scope="module")
def topical_corpus(api):
    rng = np.random.default_rng(11)
    centers = rng.normal(scale=5, size=(len(TOPICS), 24))
    r = api.post("/v1/collections", json={"collection_name": "e2e-topics", "embeddings": {"v": 24}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    docs = []
    for t, (topic, words) in enumerate(TOPICS.items()):
        for i in range(60):
            picked = rng.choice(words, size=4, replace=False)
            docs.append({"document_id": f"{topic}_{i}",
                         "payload": {"title": f"{picked[0]} {picked[1]}", "text": " ".join(picked) + " today"},
                         "embeddings": {"v": (centers[t] + rng.normal(scale=0.3, size=24)).tolist()}})
    assert api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs}).status_code == 200
    return collection_id


def wait_for_labels(api, cluster_id: str, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}").json()
        if execution["centroids"] and all(c.get("label") for c in execution["centroids"]):
            return execution
        time.sleep(0.5)
    raise AssertionError(f"no labels after {timeout}s: {execution}")


def test_runs_without_an_llm_get_labels_from_their_text(api, stack, topical_corpus):
    cluster_id = create_cluster(api, topical_corpus, "kmeans", {"n_clusters": 3}, defer_visualization=True)
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "COMPLETED"
    execution = wait_for_labels(api, cluster_id, done["additional_data"]["run_id"])
    for centroid in execution["centroids"]:
        text = (centroid["label"] + " " + " ".join(centroid["keywords"])).lower()
        assert any(word in text for words in TOPICS.values() for word in words), centroid
        assert centroid["keywords"]
    assert len({c["label"] for c in execution["centroids"]}) == 3


@pytest.mark.parametrize("model", ["gpt-4o-mini-2024-07-18", "gemini-3.1-flash-lite", "claude-3-5-haiku-20241022"])
def test_llm_labels_through_each_providers_protocol(api, stack, llm, topical_corpus, model):
    before = len(llm.fake.calls())
    cluster_id = create_cluster(
        api, topical_corpus, "kmeans", {"n_clusters": 3}, defer_visualization=True,
        llm_labeling={"enabled": True, "model_name": model, "cache_ttl_seconds": 0,
                      "labeling_inputs": {"input_mappings": [{"input_key": "text", "source_type": "payload",
                                                              "path": "text"}]}})
    done = wait_for_task(api, execute(api, cluster_id)["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    calls = llm.fake.calls()[before:]
    assert calls, "the labeler made no provider call"
    execution = api.get(f"/v1/clusters/{cluster_id}/executions/{done['additional_data']['run_id']}").json()
    assert all(c["label"] for c in execution["centroids"])
    if model.startswith("gemini"):
        assert all("gemini-2.5-flash-lite" in c.path for c in calls)  # the alias is mapped
