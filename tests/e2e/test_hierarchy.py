"""The cluster hierarchy through REST: an auto run's topics over its clusters, labelled
(keywords, and the LLM when asked), in the execution result, the data endpoint and the
map's points; `hierarchical` on another method; the depth's bounds."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

from tests.e2e.conftest import wait_for_task
from tests.e2e.test_full_mode import create_cluster, execute

pytestmark = pytest.mark.e2e

DIM = 64
PER_SUBTOPIC = 70
# Three subjects of three subtopics each: the subject's words are in all its documents,
# a subtopic's in its own.
SUBJECTS = {
    "science": (["research", "scientists", "laboratory", "experiment", "discovery"], {
        "physics": ["quantum", "particle", "electron", "photon", "relativity"],
        "biology": ["cells", "genes", "protein", "enzyme", "organism"],
        "astronomy": ["galaxy", "telescope", "planets", "nebula", "comet"]}),
    "sport": (["match", "athletes", "championship", "season", "tournament"], {
        "football": ["goalkeeper", "striker", "penalty", "offside", "stadium"],
        "tennis": ["racket", "serve", "volley", "baseline", "wimbledon"],
        "cycling": ["peloton", "sprint", "bicycle", "climb", "stage"]}),
    "food": (["recipe", "kitchen", "flavour", "ingredients", "cooking"], {
        "baking": ["flour", "dough", "oven", "pastry", "yeast"],
        "grilling": ["barbecue", "charcoal", "skewers", "smoke", "steak"],
        "salads": ["lettuce", "vinaigrette", "cucumber", "greens", "dressing"]}),
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.casefold()))


@pytest.fixture(scope="module")
def subjects_corpus(api, stack):
    """Vectors: a subject's direction, a subtopic's offset from it, a document's noise."""
    rng = np.random.default_rng(14)
    r = api.post("/v1/collections", json={"collection_name": "e2e-hierarchy", "embeddings": {"text": DIM}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    docs = []
    for subject, (common, subtopics) in SUBJECTS.items():
        center = rng.normal(size=DIM)
        for sub, words in subtopics.items():
            offset = rng.normal(scale=0.7, size=DIM)
            for i in range(PER_SUBTOPIC):
                text = " ".join([*rng.choice(common, 2, replace=False), *rng.choice(words, 3, replace=False)])
                v = center + offset + rng.normal(scale=0.25, size=DIM)
                docs.append({"document_id": f"{subject}-{sub}-{i:03d}", "payload": {"text": f"{text}."},
                             "embeddings": {"text": (v / np.linalg.norm(v)).tolist()}})
    r = api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs})
    assert r.status_code == 200, r.text
    return collection_id


def labelled(api, cluster_id: str, run_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}").json()
        if result["centroids"] and all(c.get("label") for c in result["centroids"]):
            return result
        assert time.monotonic() < deadline, f"not every centroid labelled after {timeout}s: {result['centroids']}"
        time.sleep(0.5)


def check_tree(result: dict) -> tuple[dict, list[dict]]:
    """The centroids form a tree over the run's clusters; returns them by id and the topics."""
    by_id = {c["cluster_id"]: c for c in result["centroids"]}
    topics = [c for c in result["centroids"] if c["child_cluster_ids"]]
    leaves = [c for c in result["centroids"] if not c["child_cluster_ids"] and c["cluster_id"] != "cl_-1"]
    assert topics, "no topics over the clusters"
    assert len(leaves) == result["num_clusters"]
    assert {c["hierarchy_level"] for c in result["centroids"] if c["cluster_id"] != "cl_-1"} >= {0, 1}
    for c in result["centroids"]:
        for child in c["child_cluster_ids"]:
            assert by_id[child]["parent_cluster_id"] == c["cluster_id"]
            assert by_id[child]["hierarchy_level"] == c["hierarchy_level"] + 1
    for t in topics:
        assert t["num_members"] == sum(by_id[k]["num_members"] for k in t["child_cluster_ids"])
        assert t["stable_id"] is None
    assert all(c["stable_id"] for c in leaves)  # lineage goes on at the leaf level
    return by_id, topics


def test_an_auto_run_returns_labelled_topics_over_its_clusters(api, stack, subjects_corpus):
    r = api.post("/v1/clusters", json={"collection_ids": [subjects_corpus], "cluster_name": "subjects"})
    assert r.status_code == 200, r.text
    cluster = r.json()
    assert cluster["clustering_method"] == "auto"
    assert (cluster["hierarchical"], cluster["max_hierarchy_depth"]) == (False, 3)
    task = execute(api, cluster["cluster_id"])
    run_id = task["additional_data"]["run_id"]
    assert wait_for_task(api, task["task_id"], stack=stack)["status"] == "COMPLETED"
    result = labelled(api, cluster["cluster_id"], run_id)
    assert result["num_clusters"] == 9, [c["keywords"] for c in result["centroids"]]
    by_id, topics = check_tree(result)

    # The three subjects are the topics; each is named for its subject, not its subtopics.
    assert len(topics) == 3 and all(len(t["child_cluster_ids"]) == 3 for t in topics)
    for t in topics:
        children = [by_id[k] for k in t["child_cluster_ids"]]
        subject = max(SUBJECTS, key=lambda s: len(_words(" ".join(c["label"] for c in children))
                                                  & set().union(*SUBJECTS[s][1].values())))
        assert _words(t["label"]) & set(SUBJECTS[subject][0]), (subject, t["label"])
        assert len({c["label"] for c in children}) == 3, "siblings share a label"
        assert not _words(t["label"]) <= set().union(*(_words(c["label"]) for c in children))
        assert t["label"] not in {", ".join(c["keywords"][:n]) for c in children for n in (1, 2, 3)}
    assert len({c["label"].casefold() for c in result["centroids"]}) == len(result["centroids"])

    # The data endpoint lists the topics after the clusters; a topic's members are its clusters'.
    data = api.post(f"/v1/clusters/{cluster['cluster_id']}/executions/{run_id}/data",
                    json={"include_members": True, "cluster_id": topics[0]["cluster_id"], "limit": 10_000}).json()
    listed = {c["cluster_id"]: c for c in data["centroids"]}
    assert set(listed) == set(by_id)
    assert listed[topics[0]["cluster_id"]]["child_cluster_ids"] == topics[0]["child_cluster_ids"]
    assert listed[topics[0]["cluster_id"]]["label"] == topics[0]["label"]
    assert data["pagination"]["total"] == topics[0]["num_members"]
    assert {m["cluster_id"] for m in data["members"]} == set(topics[0]["child_cluster_ids"])

    # The map's points carry the hierarchy the page labels by.
    points = api.get(f"/v1/clusters/{cluster['cluster_id']}/executions/{run_id}/points").json()
    drawn = {c["cluster_id"]: c for c in points["clusters"]}
    for t in topics:
        assert drawn[t["cluster_id"]]["hierarchy_level"] == 0 and drawn[t["cluster_id"]]["label"] == t["label"]
        for k in t["child_cluster_ids"]:
            assert drawn[k]["parent_cluster_id"] == t["cluster_id"]


def test_hierarchical_on_a_named_method_and_llm_labels_for_topics(api, stack, llm, subjects_corpus):
    cluster_id = create_cluster(api, subjects_corpus, "kmeans", {"n_clusters": 9}, defer_visualization=True)
    before = len(llm.fake.calls())
    task = execute(api, cluster_id, {"hierarchical": True, "max_hierarchy_depth": 2,
                                     "llm_labeling": {"enabled": True, "model_name": "gpt-4o-mini-2024-07-18",
                                                      "cache_ttl_seconds": 0}})
    run_id = task["additional_data"]["run_id"]
    assert wait_for_task(api, task["task_id"], stack=stack)["status"] == "COMPLETED"
    result = labelled(api, cluster_id, run_id)
    _, topics = check_tree(result)
    assert max(c["hierarchy_level"] for c in result["centroids"] if c["cluster_id"] != "cl_-1") == 1
    prompts = [c.prompt for c in llm.fake.calls()[before:]]
    assert any("A topic over these named subtopics" in p and f"### Cluster {topics[0]['cluster_id']} " in p
               for p in prompts), "the LLM was not asked to name the topics"
    # The override is not persisted: the cluster's next run is flat again.
    assert api.get(f"/v1/clusters/{cluster_id}").json()["hierarchical"] is False
    flat = execute(api, cluster_id)
    assert wait_for_task(api, flat["task_id"], stack=stack)["status"] == "COMPLETED"
    again = api.get(f"/v1/clusters/{cluster_id}/executions/{flat['additional_data']['run_id']}").json()
    assert not any(c["child_cluster_ids"] for c in again["centroids"])


@pytest.mark.parametrize("depth", [1, 6])
def test_a_depth_out_of_bounds_is_a_422_naming_the_field(api, stack, subjects_corpus, depth):
    r = api.post("/v1/clusters", json={"collection_ids": [subjects_corpus], "cluster_name": "deep",
                                       "hierarchical": True, "max_hierarchy_depth": depth})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "max_hierarchy_depth"
    cluster_id = create_cluster(api, subjects_corpus, "kmeans", {"n_clusters": 3})
    r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"max_hierarchy_depth": depth})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "max_hierarchy_depth"
    assert "5" in r.json()["detail"][0]["msg"] or "2" in r.json()["detail"][0]["msg"]
