"""Stable cluster identities and lineage across full runs, through the whole system."""
from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.conftest import wait_for_task
from tests.e2e.test_assign_composite import completed_run, execution, labelled_execution, members_of
from tests.e2e.test_full_mode import DIM, GROUPS, PER_GROUP, create_cluster

pytestmark = pytest.mark.e2e

SEED = 21
FIRST_FIVE = {"filters": {"AND": [{"field": "group", "operator": "lt", "value": GROUPS - 1}]}}


def groups(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(GROUPS, DIM))
    truth = np.repeat(np.arange(GROUPS), PER_GROUP)
    noise = rng.normal(scale=0.35, size=(len(truth), DIM))
    return centers, truth, noise


def vectors(centers: np.ndarray, truth: np.ndarray, noise: np.ndarray) -> np.ndarray:
    X = centers[truth] + noise
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def upsert(api, collection_id: str, X: np.ndarray, truth: np.ndarray, rows) -> None:
    for start in range(0, len(rows), 500):
        docs = [{"document_id": f"doc_{i:05d}", "payload": {"group": int(truth[i])},
                 "embeddings": {"text": X[i].tolist()}} for i in rows[start:start + 500]]
        r = api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs})
        assert r.status_code == 200, r.text


def stable_ids(result: dict) -> dict[str, str]:
    return {c["cluster_id"]: c["stable_id"] for c in result["centroids"] if c["cluster_id"] != "cl_-1"}


def kinds(result: dict) -> list[str]:
    return sorted(e["kind"] for e in result["lineage"]["events"])


def by_group(api, cluster_id: str, run_id: str, truth: np.ndarray, ids: dict[str, str]) -> dict[int, str]:
    """The stable id of the cluster that holds most of each group."""
    votes: dict[int, dict[str, int]] = {}
    for doc, cl in members_of(api, cluster_id, run_id).items():
        if cl != "cl_-1":
            group = int(truth[int(doc.split("_")[1])])
            votes.setdefault(group, {}).setdefault(ids[cl], 0)
            votes[group][ids[cl]] += 1
    return {g: max(v, key=v.get) for g, v in votes.items()}


def test_ids_survive_reruns_a_new_group_is_new_and_merged_groups_merge(api, stack):
    centers, truth, noise = groups()
    r = api.post("/v1/collections", json={"collection_name": "e2e-stable", "embeddings": {"text": DIM}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    upsert(api, collection_id, vectors(centers, truth, noise), truth, range(len(truth)))
    cluster_id = create_cluster(api, collection_id, "hdbscan", {"min_cluster_size": 50})

    # 1. The first run: five groups, every cluster new.
    first_id = completed_run(api, stack, cluster_id, FIRST_FIVE)
    first = labelled_execution(api, cluster_id, first_id)
    assert first["num_clusters"] == GROUPS - 1
    assert kinds(first) == ["new"] * (GROUPS - 1) and first["lineage"]["previous_run_id"] is None
    ids_1 = stable_ids(first)
    assert len(set(ids_1.values())) == GROUPS - 1 and all(s.startswith("sc_") for s in ids_1.values())
    labels_1 = {c["stable_id"]: c["label"] for c in first["centroids"] if c["stable_id"]}
    assert all(labels_1.values())
    groups_1 = by_group(api, cluster_id, first_id, truth, ids_1)

    # 2. The same data again: every id (and label) kept, every cluster continued.
    second_id = completed_run(api, stack, cluster_id, FIRST_FIVE)
    second = execution(api, cluster_id, second_id)
    assert kinds(second) == ["continued"] * (GROUPS - 1)
    assert second["lineage"]["previous_run_id"] == first_id and second["lineage"]["basis"] == "members"
    assert sorted(stable_ids(second).values()) == sorted(ids_1.values())
    assert {c["stable_id"]: c["label"] for c in second["centroids"] if c["stable_id"]} == labels_1
    assert by_group(api, cluster_id, second_id, truth, stable_ids(second)) == groups_1
    task = api.get(f"/v1/tasks/{second['task_id']}").json()
    assert task["additional_data"]["lineage"]["continued"] == GROUPS - 1

    # 3. All six groups: the five keep their ids, the sixth is exactly one new cluster.
    third_id = completed_run(api, stack, cluster_id)
    third = labelled_execution(api, cluster_id, third_id)
    assert third["num_clusters"] == GROUPS
    assert kinds(third) == ["continued"] * (GROUPS - 1) + ["new"]
    groups_3 = by_group(api, cluster_id, third_id, truth, stable_ids(third))
    assert {g: groups_3[g] for g in groups_1} == groups_1
    new = next(e for e in third["lineage"]["events"] if e["kind"] == "new")
    assert new["current_stable_ids"] == [groups_3[GROUPS - 1]] and groups_3[GROUPS - 1] not in ids_1.values()
    # The continued clusters keep their labels; the new one is named, unlike any of them.
    labels_3 = {c["stable_id"]: c["label"] for c in third["centroids"] if c["stable_id"]}
    assert {s: labels_3[s] for s in labels_1} == labels_1
    assert labels_3[groups_3[GROUPS - 1]].casefold() not in {v.casefold() for v in labels_1.values()}

    # 4. The last group's documents move onto the one before: the two clusters merge.
    last, before = GROUPS - 1, GROUPS - 2
    moved = truth.copy()
    moved[truth == last] = before
    rows = np.flatnonzero(truth == last)
    upsert(api, collection_id, vectors(centers, moved, noise), truth, rows)
    fourth_id = completed_run(api, stack, cluster_id)
    fourth = execution(api, cluster_id, fourth_id)
    assert fourth["num_clusters"] == GROUPS - 1
    merges = [e for e in fourth["lineage"]["events"] if e["kind"] == "merged"]
    assert len(merges) == 1, fourth["lineage"]
    assert sorted(merges[0]["previous_stable_ids"]) == sorted([groups_3[last], groups_3[before]])
    assert merges[0]["current_stable_ids"][0] in (groups_3[last], groups_3[before])
    assert kinds(fourth) == ["continued"] * (GROUPS - 2) + ["merged"]
    assert set(stable_ids(fourth).values()) <= set(groups_3.values())

    # The lineage is in the task too, and every run of the chain names its previous one.
    listing = api.post(f"/v1/clusters/{cluster_id}/executions/list", json={"sort": {"direction": "asc"}}).json()
    chain = [(r["run_id"], (r["lineage"] or {}).get("previous_run_id")) for r in listing["results"]]
    assert chain == [(first_id, None), (second_id, first_id), (third_id, second_id), (fourth_id, third_id)]
    done = wait_for_task(api, fourth["task_id"])
    assert done["additional_data"]["lineage"]["merged"] == 1
