"""Stable cluster identities: the pure matching of one run's clusters to the previous run's."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from services.clusterer.lineage import (
    RunGroups,
    first_run,
    match_groups,
    new_stable_id,
)

DIM = 8


def directions(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, DIM))


def run(assignment: dict[str, str], vectors: dict[str, np.ndarray], stable: dict[str, str] | None = None
        ) -> RunGroups:
    """A run from {document_id: cluster key} and {cluster key: centroid}."""
    keys = sorted({k for k in assignment.values() if k != "cl_-1"}, key=lambda k: int(k[3:]))
    members = pl.DataFrame({"document_id": list(assignment), "cluster_id": list(assignment.values())})
    return RunGroups(keys=keys, vectors=np.stack([vectors[k] for k in keys]),
                       stable_ids=[stable[k] for k in keys] if stable else None, members=members)


def docs(prefix: str, n: int, key: str) -> dict[str, str]:
    return {f"{prefix}{i}": key for i in range(n)}


def kinds(match) -> list[str]:
    return sorted(e.kind for e in match.events)


@pytest.fixture
def base():
    d = directions(4)
    vectors = {"cl_0": d[0], "cl_1": d[1], "cl_2": d[2]}
    assignment = {**docs("a", 100, "cl_0"), **docs("b", 80, "cl_1"), **docs("c", 60, "cl_2")}
    first = first_run("run_1", ["cl_0", "cl_1", "cl_2"])
    return run(assignment, vectors, first.stable_ids), assignment, vectors, d


def test_first_run_is_all_new_with_deterministic_ids():
    match = first_run("run_1", ["cl_0", "cl_1"])
    assert kinds(match) == ["new", "new"]
    assert match.stable_ids == {"cl_0": new_stable_id("run_1", "cl_0"), "cl_1": new_stable_id("run_1", "cl_1")}
    assert all(s.startswith("sc_") and len(s) == 15 for s in match.stable_ids.values())
    assert first_run("run_1", ["cl_0"]).stable_ids["cl_0"] == match.stable_ids["cl_0"]
    assert first_run("run_2", ["cl_0"]).stable_ids["cl_0"] != match.stable_ids["cl_0"]


def test_same_data_keeps_every_id(base):
    previous, assignment, vectors, _ = base
    match = match_groups(previous, run(assignment, vectors), "run_2")
    assert match.basis == "members" and match.shared_documents == 240
    assert kinds(match) == ["continued"] * 3
    assert [match.stable_ids[k] for k in previous.keys] == previous.stable_ids
    assert match.inherited == {"cl_0": "cl_0", "cl_1": "cl_1", "cl_2": "cl_2"}
    assert all(e.similarity == 1.0 for e in match.events)


def test_renumbered_clusters_keep_their_ids(base):
    previous, assignment, vectors, _ = base
    swap = {"cl_0": "cl_1", "cl_1": "cl_0", "cl_2": "cl_2"}
    match = match_groups(previous, run({d: swap[k] for d, k in assignment.items()},
                                         {swap[k]: v for k, v in vectors.items()}), "run_2")
    assert match.stable_ids["cl_1"] == previous.stable_ids[0]
    assert match.stable_ids["cl_0"] == previous.stable_ids[1]


def test_a_new_separated_group_is_exactly_one_new(base):
    previous, assignment, vectors, d = base
    current = run({**assignment, **docs("n", 50, "cl_3")}, {**vectors, "cl_3": d[3]})
    match = match_groups(previous, current, "run_2")
    assert kinds(match) == ["continued"] * 3 + ["new"]
    assert match.stable_ids["cl_3"] == new_stable_id("run_2", "cl_3")
    assert [e.current for e in match.events if e.kind == "new"] == [["cl_3"]]


def test_growth_with_new_documents_is_still_continued(base):
    previous, assignment, vectors, _ = base
    grown = {**assignment, **docs("a_new", 300, "cl_0")}  # cl_0 quadruples
    match = match_groups(previous, run(grown, vectors), "run_2")
    assert kinds(match) == ["continued"] * 3


def test_two_groups_merging_is_a_merge_that_keeps_one_id(base):
    previous, assignment, vectors, _ = base
    merged = {d: ("cl_0" if k in ("cl_0", "cl_1") else "cl_1") for d, k in assignment.items()}
    match = match_groups(previous, run(merged, {"cl_0": vectors["cl_0"], "cl_1": vectors["cl_2"]}), "run_2")
    assert kinds(match) == ["continued", "merged"]
    merge = next(e for e in match.events if e.kind == "merged")
    assert merge.previous == ["cl_0", "cl_1"] and merge.current == ["cl_0"]
    # The larger previous cluster (higher Jaccard) carries its id on; the other ends.
    assert match.stable_ids["cl_0"] == previous.stable_ids[0]
    assert match.stable_ids["cl_1"] == previous.stable_ids[2]


def test_a_split_keeps_the_id_on_the_larger_part(base):
    previous, assignment, vectors, d = base
    split = dict(assignment)
    for i in range(40):
        split[f"a{i}"] = "cl_3"  # 60 stay in cl_0, 40 go to a new cl_3
    match = match_groups(previous, run(split, {**vectors, "cl_3": d[3]}), "run_2")
    assert kinds(match) == ["continued", "continued", "split"]
    event = next(e for e in match.events if e.kind == "split")
    assert event.previous == ["cl_0"] and event.current == ["cl_0", "cl_3"]
    assert match.stable_ids["cl_0"] == previous.stable_ids[0]
    assert match.stable_ids["cl_3"] == new_stable_id("run_2", "cl_3")


def test_a_cluster_gone_to_noise_is_dissolved(base):
    previous, assignment, vectors, _ = base
    gone = {d: ("cl_-1" if k == "cl_2" else k) for d, k in assignment.items()}
    match = match_groups(previous, run(gone, vectors), "run_2")
    assert kinds(match) == ["continued", "continued", "dissolved"]
    assert next(e for e in match.events if e.kind == "dissolved").previous == ["cl_2"]


def test_without_shared_documents_centroids_decide(base):
    previous, _, vectors, d = base
    rng = np.random.default_rng(3)
    moved = {k: v + rng.normal(scale=0.05, size=DIM) for k, v in vectors.items()}
    fresh = {**docs("x", 10, "cl_0"), **docs("y", 10, "cl_1"), **docs("z", 10, "cl_2"), **docs("w", 10, "cl_3")}
    current = run(fresh, {"cl_0": moved["cl_2"], "cl_1": moved["cl_0"], "cl_2": moved["cl_1"], "cl_3": d[3]})
    match = match_groups(previous, current, "run_2")
    assert match.basis == "centroids" and match.shared_documents == 0
    assert kinds(match) == ["continued"] * 3 + ["new"]
    assert match.stable_ids["cl_0"] == previous.stable_ids[2]
    assert match.stable_ids["cl_1"] == previous.stable_ids[0]


def test_centroid_merges_and_splits():
    d = directions(3, seed=5)
    near = lambda v, s: v + np.random.default_rng(s).normal(scale=0.02, size=DIM)  # noqa: E731
    previous = RunGroups(keys=["cl_0", "cl_1"], vectors=np.stack([d[0], near(d[0], 1)]),
                           stable_ids=["sc_a", "sc_b"])
    current = RunGroups(keys=["cl_0"], vectors=np.stack([near(d[0], 2)]))
    match = match_groups(previous, current, "run_2")
    assert kinds(match) == ["merged"]
    assert match.stable_ids["cl_0"] in ("sc_a", "sc_b")

    previous = RunGroups(keys=["cl_0"], vectors=np.stack([d[1]]), stable_ids=["sc_a"])
    current = RunGroups(keys=["cl_0", "cl_1", "cl_2"], vectors=np.stack([near(d[1], 3), near(d[1], 4), d[2]]))
    match = match_groups(previous, current, "run_2")
    assert kinds(match) == ["new", "split"]
    assert list(match.stable_ids.values()).count("sc_a") == 1


def test_an_empty_side_dissolves_or_creates():
    previous = RunGroups(keys=["cl_0"], vectors=np.ones((1, DIM)), stable_ids=["sc_a"])
    match = match_groups(previous, RunGroups(keys=[], vectors=np.zeros((0, DIM))), "run_2")
    assert kinds(match) == ["dissolved"]


def test_previous_stable_ids_are_required():
    with pytest.raises(ValueError, match="stable ids"):
        match_groups(RunGroups(keys=["cl_0"], vectors=np.ones((1, DIM))),
                       RunGroups(keys=["cl_0"], vectors=np.ones((1, DIM))), "run_2")
