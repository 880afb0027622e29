"""mode=assign and mode=composite through the real gateway, Kafka, workers, Postgres and S3."""
from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tests.e2e.conftest import wait_for_task
from tests.e2e.test_full_mode import DIM, GROUPS, PER_GROUP, create_cluster, execute, members_of, separated_groups

pytestmark = pytest.mark.e2e

FAR = 40  # documents in no group: random directions, nearly orthogonal to every centroid


def _upload(api, name: str, X: np.ndarray, payloads: list[dict], dim: int = DIM) -> str:
    r = api.post("/v1/collections", json={"collection_name": name, "embeddings": {"text": dim}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    for start in range(0, len(X), 500):
        docs = [{"document_id": payloads[i]["id"], "payload": payloads[i], "embeddings": {"text": X[i].tolist()}}
                for i in range(start, min(start + 500, len(X)))]
        r = api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs})
        assert r.status_code == 200, r.text
    return collection_id


@pytest.fixture(scope="module")
def corpus(api, stack):
    """The groups (each document `old` or `new`, `half` 0 or 1) plus FAR far-off documents."""
    X, truth = separated_groups(seed=11)
    rng = np.random.default_rng(12)
    far = rng.normal(size=(FAR, DIM))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    X = np.vstack([X, far]).astype(np.float32)
    truth = np.concatenate([truth, np.full(FAR, -1)])
    payloads = [{"id": f"doc_{i:05d}", "group": int(truth[i]), "batch": "old" if i % 3 else "new",
                 "half": i % 2, "far": bool(truth[i] < 0)} for i in range(len(X))]
    collection_id = _upload(api, "e2e-assign", X, payloads)
    return collection_id, X, truth


def truth_of(doc_id: str, truth: np.ndarray) -> int:
    return int(truth[int(doc_id.split("_")[1])])


def execution(api, cluster_id: str, run_id: str) -> dict:
    r = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


def labelled_execution(api, cluster_id: str, run_id: str, timeout: float = 60) -> dict:
    """The run once the labeler's (offline) labels are merged into its centroids."""
    deadline = time.monotonic() + timeout
    while True:
        done = execution(api, cluster_id, run_id)
        if all(c["label"] for c in done["centroids"]) or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def completed_run(api, stack, cluster_id: str, body: dict | None = None) -> str:
    task = execute(api, cluster_id, body)
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    return task["additional_data"]["run_id"]


@pytest.fixture(scope="module")
def assign_cluster(api, stack, corpus):
    """A kmeans cluster over the `old` grouped documents only (its stored filters)."""
    collection_id, _, _ = corpus
    return create_cluster(api, collection_id, "kmeans", {"n_clusters": GROUPS},
                          filters={"AND": [{"field": "batch", "operator": "eq", "value": "old"},
                                           {"field": "far", "operator": "eq", "value": False}]})


def test_assign_without_a_completed_full_run_is_a_400(api, assign_cluster):
    r = api.post(f"/v1/clusters/{assign_cluster}/execute", json={"mode": "assign"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "no_source_run" and "mode 'full' first" in error["message"]


def test_assign_puts_new_documents_on_the_last_full_runs_centroids(api, stack, corpus, assign_cluster):
    collection_id, X, truth = corpus
    source_id = completed_run(api, stack, assign_cluster)
    source = labelled_execution(api, assign_cluster, source_id)
    source_members = members_of(api, assign_cluster, source_id)
    # Which source cluster holds each group.
    cluster_of_group = {truth_of(d, truth): c for d, c in source_members.items()}

    # The per-run filter override reaches the new documents and the far-off ones too.
    task = execute(api, assign_cluster, {"mode": "assign", "filters": {}})
    assert task["additional_data"]["source_run_id"] == source_id and task["additional_data"]["mode"] == "assign"
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    assert done["additional_data"]["source_run_id"] == source_id
    run_id = task["additional_data"]["run_id"]

    result = execution(api, assign_cluster, run_id)
    assert result["mode"] == "assign" and result["source_run_id"] == source_id
    assert result["num_points"] == len(X) and result["noise_count"] == FAR
    assert result["sampling"]["cap"] is None and result["sampling"]["sampled"] == len(X)
    by_id = {c["cluster_id"]: c for c in result["centroids"]}
    for c in source["centroids"]:  # the clusters are the source's: same ids, stable ids, labels
        assert by_id[c["cluster_id"]]["stable_id"] == c["stable_id"] is not None
        assert by_id[c["cluster_id"]]["label"] == c["label"]

    assigned = members_of(api, assign_cluster, run_id)
    assert len(assigned) == len(X)
    for doc_id, cluster in assigned.items():
        group = truth_of(doc_id, truth)
        assert cluster == ("cl_-1" if group < 0 else cluster_of_group[group]), doc_id
    page = api.post(f"/v1/clusters/{assign_cluster}/executions/{run_id}/data",
                    json={"include_members": True, "limit": 5}).json()
    member = page["members"][0]
    assert member["similarity"] >= 0.5 and member["distance_to_centroid"] >= 0
    # An assign run does not move the clustering: a later assign still uses the full run.
    again = execute(api, assign_cluster, {"mode": "assign", "sample_size": 100, "assignment_threshold": 0.99})
    done = wait_for_task(api, again["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    result = execution(api, assign_cluster, again["additional_data"]["run_id"])
    assert result["source_run_id"] == source_id
    assert result["num_points"] == 100 and result["sampling"]["requested_sample_size"] == 100
    assert result["noise_count"] == 100  # nothing is that close to a centroid


@pytest.fixture(scope="module")
def halves(api, stack, corpus):
    """Two full runs of one cluster over disjoint halves of the grouped documents."""
    collection_id, _, _ = corpus
    cluster_id = create_cluster(api, collection_id, "kmeans", {"n_clusters": GROUPS},
                                filters={"AND": [{"field": "far", "operator": "eq", "value": False}]})
    runs = [completed_run(api, stack, cluster_id,
                          {"filters": {"AND": [{"field": "half", "operator": "eq", "value": h},
                                               {"field": "far", "operator": "eq", "value": False}]}})
            for h in (0, 1)]
    for run_id in runs:
        labelled_execution(api, cluster_id, run_id)
    return cluster_id, runs


def test_composite_groups_the_same_topics_across_runs(api, stack, corpus, halves):
    _, X, truth = corpus
    cluster_id, runs = halves
    task = execute(api, cluster_id, {"mode": "composite", "source_execution_ids": runs})
    assert task["additional_data"]["source_execution_ids"] == runs
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    run_id = task["additional_data"]["run_id"]
    result = execution(api, cluster_id, run_id)
    assert result["mode"] == "composite" and result["source_execution_ids"] == runs
    assert result["num_clusters"] == GROUPS and result["num_points"] == GROUPS * PER_GROUP

    # Every source cluster is mapped to a group; each group holds one cluster of each run.
    mapping = result["source_clusters"]
    assert len(mapping) == 2 * GROUPS
    groups: dict[str, list[str]] = {}
    for m in mapping:
        groups.setdefault(m["cluster_id"], []).append(m["source_run_id"])
        assert m["similarity"] > 0.9 and m["label"]
    assert sorted(groups) == sorted(f"cl_{g}" for g in range(GROUPS))
    assert all(sorted(v) == sorted(runs) for v in groups.values())
    # Groups are named after their largest source cluster.
    labels = {m["label"] for m in mapping}
    assert all(c["label"] in labels for c in result["centroids"] if c["cluster_id"] != "cl_-1")

    # The members of both runs inherit their cluster's group: one group per topic.
    page = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/data",
                    json={"include_members": True, "limit": 10_000}).json()
    members = page["members"]
    assert page["pagination"]["total"] == GROUPS * PER_GROUP == len(members)
    assert {m["source_run_id"] for m in members} == set(runs)
    group_of_source = {(m["source_run_id"], m["source_cluster_id"]): m["cluster_id"] for m in mapping}
    assert all(group_of_source[(m["source_run_id"], m["source_cluster_id"])] == m["cluster_id"] for m in members)
    docs = sorted(m["document_id"] for m in members)
    group_of = {m["document_id"]: m["cluster_id"] for m in members}
    assert adjusted_rand_score([truth_of(d, truth) for d in docs], [group_of[d] for d in docs]) == 1.0

    r = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}/visualization")
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_layout_for_composite"


def test_composite_sources_are_checked_one_by_one(api, stack, corpus, halves):
    collection_id, _, _ = corpus
    cluster_id, runs = halves

    def refused(ids, code: str, offending: str | None = None) -> dict:
        r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"mode": "composite", "source_execution_ids": ids})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == code, error
        if offending:
            assert offending in error["message"] and error["details"]["source_execution_id"] == offending
        return error

    refused(None, "too_few_sources")
    refused([runs[0]], "too_few_sources")
    refused([runs[0], runs[0]], "too_few_sources")
    refused([runs[0], runs[1], runs[0]], "duplicate_source", runs[0])
    refused([runs[0], "run_nope"], "source_not_found", "run_nope")

    failing = create_cluster(api, collection_id, "kmeans", {"n_clusters": 5000})
    task = execute(api, failing)
    assert wait_for_task(api, task["task_id"], stack=stack)["status"] == "FAILED"
    refused([runs[0], task["additional_data"]["run_id"]], "source_not_completed", task["additional_data"]["run_id"])

    # Runs of other clusters of the namespace may be sources, but only of one dimension.
    rng = np.random.default_rng(3)
    small = rng.normal(size=(40, 8)).astype(np.float32)
    other_col = _upload(api, "e2e-assign-8d", small, [{"id": f"s_{i}"} for i in range(40)], dim=8)
    other = create_cluster(api, other_col, "kmeans", {"n_clusters": 2})
    other_run = completed_run(api, stack, other)
    refused([runs[0], other_run], "dimension_mismatch", other_run)

    r = api.post(f"/v1/clusters/{cluster_id}/execute", json={"mode": "composite", "source_execution_ids": runs})
    assert r.status_code == 200  # the same sources, all fine
