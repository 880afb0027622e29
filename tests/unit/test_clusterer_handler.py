"""`Clusterer.handle` over the fakes of tests/fakes (no servers): each mode's rules as
the clusterer applies them to a run's event: which mode runs, what a cluster inherits
(stable ids and labels from the previous full run, the source run's clusters for an
assign run, the largest labelled source cluster's label for a composite group), and a
run canceled while it works stopping at its next stage boundary with nothing written
or published. Every store call must come from a worker thread (OffLoopObjectStore)."""
from __future__ import annotations

import asyncio

import numpy as np
import polars as pl
import pytest

from clusterflow.messaging import RunFailed
from clusterflow.runstate import RunCanceled
from clusterflow.segments import SegmentCache
from clusterflow.storage import artifact_key
from contracts.api import ExecutionMode, LLMLabeling, TaskStatusEnum
from contracts.events import (
    CentroidSummary,
    ClusteringConfig,
    DatasetPrepared,
    ExecutionClustered,
    RunStatusChanged,
    SamplingInfo,
    SourceRun,
)
from contracts.topics import EXECUTION_CLUSTERED
from services.clusterer.handler import Clusterer
from tests.fakes import FakeRunState, MemoryProcessed, MemorySegmentLedger, OffLoopObjectStore, RecordingPublisher
from tests.support.segments import put_run

NS, CLUSTER, DIM = "ns", "clust_1", 8
GROUPS = ("a", "b", "c")


def blobs(per_group: int = 20, seed: int = 0, prefix: str = "") -> tuple[list[str], np.ndarray]:
    """Three far-apart groups; a document's id names its group ("a-3")."""
    rng = np.random.default_rng(seed)
    centers = np.eye(DIM, dtype=np.float32)[: len(GROUPS)] * 10
    ids, rows = [], []
    for g, name in enumerate(GROUPS):
        for i in range(per_group):
            ids.append(f"{prefix}{name}-{i}")
            rows.append(centers[g] + rng.normal(scale=0.3, size=DIM))
    return ids, np.asarray(rows, dtype=np.float32)


def group_of(document_id: str) -> str:
    return document_id.rsplit("/", 1)[-1].split("-")[0].removeprefix("new")


@pytest.fixture
def rig(tmp_path):
    store = OffLoopObjectStore()
    runs = FakeRunState()
    clusterer = Clusterer(store=store, cache=SegmentCache(store, tmp_path / "cache", 10**9),
                          ledger=MemorySegmentLedger(), publisher=RecordingPublisher(), processed=MemoryProcessed(),
                          runs=runs, heartbeat_s=60.0)
    return clusterer


def prepared(clusterer: Clusterer, run_id: str, ids: list[str], X: np.ndarray, *, mode: str = "full",
             llm: bool = False, **fields) -> DatasetPrepared:
    key = put_run(clusterer.store, NS, CLUSTER, run_id, ids, X)
    config = ClusteringConfig(mode=ExecutionMode(mode), clustering_method="kmeans",
                              algorithm_params={"n_clusters": 3}, embedding_name="text", defer_visualization=True,
                              llm_labeling=LLMLabeling(enabled=True) if llm else None)
    return DatasetPrepared(namespace=NS, run_id=run_id, cluster_id=CLUSTER, task_id=f"task_{run_id}",
                           manifest_key=key, num_points=len(ids), dimension=X.shape[1], config=config,
                           sampling=SamplingInfo(matched=len(ids), sampled=len(ids)), **fields)


def handled(clusterer: Clusterer, event: DatasetPrepared) -> ExecutionClustered:
    asyncio.run(clusterer.handle(event))
    [clustered] = [e for e in clusterer.publisher.on(EXECUTION_CLUSTERED) if e.run_id == event.run_id]
    return clustered


def members_by_cluster(clusterer: Clusterer, clustered: ExecutionClustered) -> dict[str, set[str]]:
    frame = clusterer.store.get_parquet(clustered.artifacts.members_key)
    return {k: set(v) for k, v in frame.group_by("cluster_id").agg(pl.col("document_id"))
            .select("cluster_id", "document_id").iter_rows()}


def groups_of(clusterer: Clusterer, clustered: ExecutionClustered) -> dict[str, str]:
    """Each cluster's group (all its members are of one group in these blobs)."""
    found = {}
    for key, docs in members_by_cluster(clusterer, clustered).items():
        names = {group_of(d) for d in docs}
        assert len(names) == 1, f"cluster {key} mixes groups {names}"
        found[key] = names.pop()
    return found


def as_source(clustered: ExecutionClustered, labels: dict[str, str] | None = None, *,
              labeling_enabled: bool = False, groups: dict[str, str] | None = None) -> SourceRun:
    """The completed run as the preparer hands it on, its clusters labelled by group."""
    centroids = [c.model_copy(update={"label": labels[groups[c.group_id]]})
                 if labels and groups and c.group_id in groups else c for c in clustered.centroids]
    return SourceRun(run_id=clustered.run_id, cluster_id=CLUSTER, members_key=clustered.artifacts.members_key,
                     centroids_key=clustered.artifacts.centroids_key, num_points=clustered.num_points,
                     labeling_enabled=labeling_enabled, centroids=centroids)


LABELS = {"a": "Apples", "b": "Boats", "c": "Chess"}


@pytest.fixture
def first(rig):
    """A first full run over the blobs: its clusters, and each one's group."""
    ids, X = blobs()
    clustered = handled(rig, prepared(rig, "run_1", ids, X))
    return clustered, groups_of(rig, clustered)


# --------------------------------------------------------------------------- full


def test_a_first_full_run_clusters_the_groups_with_new_stable_ids_and_no_labels(rig, first):
    clustered, groups = first
    assert clustered.config.mode is ExecutionMode.full and clustered.num_clusters == 3
    assert sorted(groups.values()) == ["a", "b", "c"]
    assert all(c.stable_id and c.stable_id.startswith("sc_") and c.label is None for c in clustered.centroids)
    assert len({c.stable_id for c in clustered.centroids}) == 3
    assert clustered.lineage.previous_run_id is None
    assert rig.store.exists(artifact_key(NS, CLUSTER, "run_1", "centroids"))
    writes = [thread for name, thread in rig.store.calls if name == "put_parquet"]
    assert writes and "MainThread" not in writes  # the results went to S3 from worker threads


def test_a_later_full_run_keeps_each_groups_stable_id_and_label(rig, first):
    """Renumbered clusters (other documents, other order) match the previous run's by
    their members: each keeps the stable id and the label its group had."""
    before, groups = first
    stable_of_group = {groups[c.group_id]: c.stable_id for c in before.centroids}
    ids, X = blobs(seed=1, per_group=25)
    order = np.random.default_rng(5).permutation(len(ids))
    event = prepared(rig, "run_2", [ids[i] for i in order], X[order],
                     previous=as_source(before, LABELS, groups=groups))
    after = handled(rig, event)
    now = groups_of(rig, after)
    assert after.lineage.previous_run_id == "run_1"
    for c in after.centroids:
        assert c.stable_id == stable_of_group[now[c.group_id]]
        assert c.label == LABELS[now[c.group_id]]


def test_a_run_asking_for_llm_labels_keeps_stable_ids_but_not_offline_labels(rig, first):
    before, groups = first
    ids, X = blobs(seed=2)
    after = handled(rig, prepared(rig, "run_2", ids, X, llm=True,
                                  previous=as_source(before, LABELS, groups=groups, labeling_enabled=False)))
    assert {c.stable_id for c in after.centroids} == {c.stable_id for c in before.centroids}
    assert all(c.label is None for c in after.centroids)  # the LLM names every cluster anew


def test_a_redelivered_event_is_clustered_once(rig):
    ids, X = blobs()
    event = prepared(rig, "run_1", ids, X)
    asyncio.run(rig.handle(event))
    asyncio.run(rig.handle(event))
    assert len(rig.publisher.on(EXECUTION_CLUSTERED)) == 1


# ------------------------------------------------------------------------- assign


def test_an_assign_run_keeps_the_source_runs_clusters_and_labels(rig, first):
    before, groups = first
    ids, X = blobs(per_group=5, seed=3, prefix="new")
    far = np.zeros((1, DIM), dtype=np.float32)
    far[0, -1] = 10  # orthogonal to every group: below the threshold of each centroid
    event = prepared(rig, "run_3", [*ids, "nowhere-0"], np.vstack([X, far]), mode="assign",
                     source=as_source(before, LABELS, groups=groups))
    assigned = handled(rig, event)
    assert assigned.config.mode is ExecutionMode.assign and assigned.source_run_id == "run_1"
    by_id = {c.group_id: c for c in assigned.centroids}
    for c in before.centroids:
        kept = by_id[c.group_id]
        assert kept.stable_id == c.stable_id and kept.label == LABELS[groups[c.group_id]]
        assert kept.num_members == 5
    assert by_id["cl_-1"].num_members == 1 and assigned.noise_count == 1
    members = members_by_cluster(rig, assigned)
    assert members["cl_-1"] == {"nowhere-0"}
    assert all(group_of(d) == groups[k] for k, docs in members.items() if k != "cl_-1" for d in docs)


def test_an_assign_run_asking_for_llm_labels_keeps_stable_ids_only(rig, first):
    before, groups = first
    ids, X = blobs(per_group=5, seed=3)
    assigned = handled(rig, prepared(rig, "run_3", ids, X, mode="assign", llm=True,
                                     source=as_source(before, LABELS, groups=groups)))
    assert {c.stable_id for c in assigned.centroids} == {c.stable_id for c in before.centroids}
    assert all(c.label is None for c in assigned.centroids)


# ---------------------------------------------------------------------- composite


def test_a_composite_run_groups_the_sources_clusters_and_names_groups_after_the_largest(rig, first):
    one, groups_one = first
    ids, X = blobs(per_group=30, seed=4)
    two = handled(rig, prepared(rig, "run_2", ids, X))
    groups_two = groups_of(rig, two)
    source_one = as_source(one, LABELS, groups=groups_one)
    # run_2's clusters are larger (30 members each): its labels name the groups
    source_two = as_source(two, {g: f"{label} (2)" for g, label in LABELS.items()}, groups=groups_two)
    rows, vectors = [], []
    for source in (one, two):
        frame = rig.store.get_parquet(source.artifacts.centroids_key)
        for key, centroid in frame.filter(pl.col("centroid").is_not_null()).select("cluster_id", "centroid").iter_rows():
            rows.append(f"{source.run_id}/{key}")
            vectors.append(centroid)
    event = prepared(rig, "run_c", rows, np.asarray(vectors, dtype=np.float32), mode="composite",
                     sources=[source_one, source_two])
    grouped = handled(rig, event)
    assert grouped.config.mode is ExecutionMode.composite
    assert grouped.num_clusters == 3 and grouped.source_run_ids == ["run_1", "run_2"]
    group_of_source = {(s.source_run_id, s.source_group_id): s.group_id for s in grouped.source_clusters}
    for key, group in groups_one.items():  # the same blob in both runs lands in one group
        twin = next(k for k, g in groups_two.items() if g == group)
        assert group_of_source["run_1", key] == group_of_source["run_2", twin]
    by_group = {c.group_id: c for c in grouped.centroids}
    for key, group in groups_two.items():
        summary = by_group[group_of_source["run_2", key]]
        assert summary.label == f"{LABELS[group]} (2)" and summary.num_members == 20 + 30
    assert grouped.num_points == 60 + 90


# ------------------------------------------------------------------- dispatch, cancel


def test_each_mode_runs_its_own_rules(rig):
    ids, X = blobs(per_group=3)
    with pytest.raises(RunFailed, match="assign run needs a source"):
        asyncio.run(rig.handle(prepared(rig, "run_a", ids, X, mode="assign")))
    with pytest.raises(RunFailed, match="composite run needs at least 2 source runs"):
        asyncio.run(rig.handle(prepared(rig, "run_c", ids, X, mode="composite")))
    assert rig.publisher.on(EXECUTION_CLUSTERED) == []


def _reports(clusterer: Clusterer) -> list[str]:
    return [e.stage for e in clusterer.publisher.of(RunStatusChanged) if e.status is TaskStatusEnum.PROCESSING]


def test_a_run_canceled_while_it_works_stops_at_its_next_boundary(rig):
    ids, X = blobs()
    event = prepared(rig, "run_1", ids, X)
    rig.runs.cancel_after = 1  # the cancel lands after the first boundary (loading)
    with pytest.raises(RunCanceled):
        asyncio.run(rig.handle(event))
    assert _reports(rig) == ["loading"]  # stopped at "clustering", before it reported it
    assert rig.publisher.on(EXECUTION_CLUSTERED) == []
    assert not rig.store.exists(artifact_key(NS, CLUSTER, "run_1", "members"))
    assert not asyncio.run(rig.processed.seen("clusterer", event.event_id))  # not marked done


def test_a_run_canceled_before_it_starts_does_no_work(rig, first):
    before, groups = first
    ids, X = blobs(per_group=5)
    rig.runs.cancel("run_3")
    reads = len(rig.store.calls)
    with pytest.raises(RunCanceled):
        asyncio.run(rig.handle(prepared(rig, "run_3", ids, X, mode="assign",
                                        source=as_source(before, LABELS, groups=groups))))
    assert not any(name == "get_parquet" for name, _ in rig.store.calls[reads:])  # the centroids were not read
    assert not rig.store.exists(artifact_key(NS, CLUSTER, "run_3", "members"))


def test_a_run_prepared_for_the_ray_cap_that_falls_back_to_the_process_fails_before_reading_its_vectors(rig):
    """Ray away under CLUSTERFLOW_ENGINE=auto: a kmeans run sampled to the Ray engine's
    cap (above the in-process one) fails with what to do, without loading the matrix."""
    ids, X = blobs()
    event = prepared(rig, "run_big", ids, X).model_copy(update={"num_points": 2_000_000})
    with pytest.raises(RunFailed, match="prepared for the Ray engine.*at most 1,000,000"):
        asyncio.run(rig.handle(event))
    assert rig.cache.misses == 0  # no segment was read
