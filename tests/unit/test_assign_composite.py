"""The pure parts of assign and composite runs: batch assignment, the streamed dataset
decoder, centroid grouping, and the preparer's planning."""
from __future__ import annotations

import asyncio
import struct

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contracts.api import ExecutionMode, LLMLabeling
from contracts.events import ExecutionRequested, RunOptions
from clusterflow.datasets import dataset_schema, dataset_table, read_dataset, vectors_of, write_dataset
from clusterflow.segments import Manifest, RunVectors, SegmentCache, SegmentRef
from tests.fakes import MemoryObjectStore
from services.clusterer.assign import MEMBERS_SCHEMA, Assigner
from services.clusterer.composite import group_centroids
from services.clusterer.handler import assign_blocks, group_keys_of
from services.preparer.export import _SIGNATURE, FixedWidthCopy
from services.preparer.handler import check_source, plan_assign, plan_sample, resolve_config

DIM = 16


def unit(M: np.ndarray) -> np.ndarray:
    return (M / np.linalg.norm(M, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def centroids():
    return unit(np.random.default_rng(0).normal(size=(3, DIM)))


# --------------------------------------------------------------------------- assign


def test_assigner_picks_the_nearest_centroid_and_noise_below_the_threshold(centroids):
    rng = np.random.default_rng(1)
    near = unit(centroids[[0, 2, 1, 2]] + rng.normal(scale=0.05, size=(4, DIM)))
    far = unit(rng.normal(size=(2, DIM)))
    far -= (far @ centroids.T) @ np.linalg.pinv(centroids.T)  # orthogonal to every centroid
    X = np.vstack([near, unit(far)])
    assigner = Assigner(keys=["cl_0", "cl_1", "cl_2"], vectors=centroids, threshold=0.5)
    table = assigner.assign(pa.array([f"d{i}" for i in range(6)]), X)
    assert table.schema == MEMBERS_SCHEMA
    assert table["cluster_id"].to_pylist() == ["cl_0", "cl_2", "cl_1", "cl_2", "cl_-1", "cl_-1"]
    distance = table["distance_to_centroid"].to_pylist()
    assert distance[4] is None and distance[5] is None
    assert distance[0] == pytest.approx(float(np.linalg.norm(X[0] - centroids[0])), rel=1e-5)
    assert all(s > 0.9 for s in table["similarity"].to_pylist()[:4])
    assert assigner.counts.tolist() == [1, 1, 2] and assigner.noise == 2 and assigner.points == 6

    # per cluster: the assigned members' cosine to the centroid, and the nearest ones by id
    sims = table["similarity"].to_pylist()
    stats = assigner.centroid_stats()
    assert stats[2]["mean_cosine_similarity"] == pytest.approx((sims[1] + sims[3]) / 2, abs=1e-6)
    assert stats[2]["min_cosine_similarity"] == pytest.approx(min(sims[1], sims[3]), abs=1e-6)
    assert {d["document_id"] for d in stats[2]["representative_ids"]} == {"d1", "d3"}
    assert stats[0]["representative_ids"] == [{"document_id": "d0", "similarity": pytest.approx(sims[0], abs=1e-6)}]
    assert all("d4" not in str(s) and "d5" not in str(s) for s in stats)  # noise is nobody's

    again = Assigner(keys=["cl_0", "cl_1", "cl_2"], vectors=centroids, threshold=1.0)
    assert again.assign(pa.array(["a"]), X[:1])["cluster_id"].to_pylist() == ["cl_-1"]
    assert [s["mean_cosine_similarity"] for s in again.centroid_stats()] == [None, None, None]


def test_assigner_refuses_mismatched_dimensions_and_bad_thresholds(centroids):
    with pytest.raises(ValueError, match="dimensions"):
        Assigner(keys=["a", "b", "c"], vectors=centroids, threshold=0.5).assign(pa.array(["x"]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        Assigner(keys=["a", "b", "c"], vectors=centroids, threshold=1.5)
    with pytest.raises(ValueError, match="no centroids"):
        Assigner(keys=[], vectors=np.zeros((0, DIM)), threshold=0.5)


def test_tallies_of_blocks_assigned_apart_add_up_to_one_assigner(centroids):
    """The Ray job assigns each block with its own Assigner; their tallies, absorbed,
    equal one Assigner over every row (what the in-process path counts)."""
    X = unit(np.random.default_rng(3).normal(size=(50, DIM)))
    ids = pa.array([f"d{i}" for i in range(50)])
    whole = Assigner(keys=["a", "b", "c"], vectors=centroids, threshold=0.2)
    whole.assign(ids, X)
    joined = Assigner(keys=["a", "b", "c"], vectors=centroids, threshold=0.2)
    cosine = None
    for part in (slice(20, 50), slice(0, 20)):
        block = Assigner(keys=["a", "b", "c"], vectors=centroids, threshold=0.2)
        block.assign(ids[part], X[part])
        cosine = block.similarity if cosine is None else cosine + block.similarity  # what the Ray driver does
        joined.absorb(block.counts, block.noise, block.points, block.similarity_sum)
    assert cosine.records() == whole.centroid_stats()
    assert [s["mean_cosine_similarity"] is not None for s in whole.centroid_stats()] == [True] * 3
    joined.absorb([0, 0, 0], 0, 0, 0.0, cosine.records())
    assert joined.centroid_stats() == whole.centroid_stats()
    assert joined.counts.tolist() == whole.counts.tolist() and whole.noise > 0
    assert (joined.noise, joined.points) == (whole.noise, whole.points)
    assert joined.mean_similarity == pytest.approx(whole.mean_similarity)
    with pytest.raises(ValueError, match="2 counts for 3 centroids"):
        joined.absorb([1, 2], 0, 3, 0.0)


def test_assign_blocks_streams_the_run_into_the_members_file(tmp_path, centroids):
    rng = np.random.default_rng(2)
    n = 1000
    X = unit(centroids[rng.integers(0, 3, n)] + rng.normal(scale=0.05, size=(n, DIM)))
    ids = [f"doc_{i}" for i in range(n)]
    store = MemoryObjectStore()
    refs = []
    for s, start in enumerate(range(0, n, 300)):  # several segments
        write_dataset(str(tmp_path / f"{s}.parquet"), ids[start:start + 300], X[start:start + 300])
        store.upload(f"seg{s}", str(tmp_path / f"{s}.parquet"))
        refs.append(SegmentRef(s + 1, f"seg{s}", len(ids[start:start + 300])))
    manifest = Manifest.build(DIM, refs, np.repeat([1, 2, 3, 4], [300, 300, 300, 100]),
                              np.concatenate([np.arange(300)] * 3 + [np.arange(100)]))
    vectors = RunVectors(manifest, SegmentCache(store, tmp_path / "cache", 10**9))
    assigner = Assigner(keys=["cl_0", "cl_1", "cl_2"], vectors=centroids, threshold=0.5)
    seen = []
    assign_blocks(assigner, vectors, str(tmp_path / "members.parquet"), batch_rows=128, on_progress=seen.append)
    members = pq.ParquetFile(tmp_path / "members.parquet")
    assert members.metadata.num_row_groups == 10  # segments of 300 (and 100) in blocks of 128
    table = members.read()
    assert table["document_id"].to_pylist() == ids
    expected = np.argmax(X @ centroids.T, axis=1)
    assert table["cluster_id"].to_pylist() == [f"cl_{c}" for c in expected]
    assert assigner.points == n and assigner.counts.sum() == n
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_cluster_keys_name_every_label_noise_included():
    labels = np.array([2, -1, 0, 2, 10])
    assert group_keys_of(labels).to_list() == ["cl_2", "cl_-1", "cl_0", "cl_2", "cl_10"]
    assert group_keys_of(np.array([], dtype=np.int64)).to_list() == []


def test_vectors_of_reads_fixed_size_lists_with_offsets():
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.float32)), 3)
    assert vectors_of(column.slice(1, 2)).tolist() == [[3, 4, 5], [6, 7, 8]]


def test_vectors_of_reads_fixed_width_bytes_without_a_copy_and_with_offsets():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    column = dataset_table(["a", "b", "c", "d"], X)["vector"].chunk(0)
    assert column.type == pa.binary(12)
    view = vectors_of(column)
    assert np.shares_memory(view, np.frombuffer(column.buffers()[1], dtype=np.uint8))
    assert vectors_of(column.slice(1, 2)).tolist() == [[3, 4, 5], [6, 7, 8]]


def test_vectors_of_reads_what_polars_makes_of_fixed_width_bytes(tmp_path):
    X = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    write_dataset(str(tmp_path / "d.parquet"), list("abcde"), X)
    column = pl.read_parquet(tmp_path / "d.parquet")["vector"].to_arrow()
    assert not pa.types.is_fixed_size_binary(column.type)  # why vectors_of casts
    assert np.array_equal(vectors_of(column), X)
    with pytest.raises(ValueError, match="not all 8 bytes"):
        vectors_of(pa.array([b"12345678", b"123"]))


def test_read_dataset_fills_one_array_row_group_by_row_group(tmp_path):
    X = np.random.default_rng(2).normal(size=(3000, 8)).astype(np.float32)
    ids = [f"doc_{i}" for i in range(3000)]
    path = str(tmp_path / "d.parquet")
    with pq.ParquetWriter(path, dataset_schema(8)) as writer:
        for start in range(0, 3000, 700):
            writer.write_table(dataset_table(ids[start:start + 700], X[start:start + 700]))
    assert pq.ParquetFile(path).num_row_groups == 5
    got_ids, got = read_dataset(path)
    assert got_ids.to_pylist() == ids and np.array_equal(got, X) and got.flags.writeable
    field = pq.read_schema(path).field("vector")
    assert field.metadata == {b"clusterflow.vector": b"float32-le", b"clusterflow.dimension": b"8"}


# ---------------------------------------------------------------- the COPY decoder


def copy_stream(ids: list[str], X: np.ndarray, width: int) -> bytes:
    rows = []
    for doc, vec in zip(ids, X):
        raw = doc.encode()
        rows.append(struct.pack("!hi", 2, X.shape[1] * 4) + vec.astype("<f4").tobytes()
                    + struct.pack("!i", width) + raw + b"\0" * (width - len(raw)))
    return _SIGNATURE + struct.pack("!ii", 0, 0) + b"".join(rows) + b"\xff\xff"


@pytest.mark.parametrize("chunk", [1, 7, 1000, 10**6])
def test_fixed_width_copy_decodes_any_chunking(chunk):
    rng = np.random.default_rng(4)
    ids = [f"doc_{i}" + "é" * (i % 3) for i in range(50)]
    X = rng.normal(size=(50, 4)).astype(np.float32)
    width = max(len(i.encode()) for i in ids)
    data = copy_stream(ids, X, width)
    groups: list[list[np.ndarray]] = []
    stream = FixedWidthCopy([16, width], rows_per_group=8, on_rows=groups.append)

    async def run() -> None:
        for start in range(0, len(data), chunk):
            await stream.feed(data[start:start + chunk])
        await stream.finish()

    asyncio.run(run())
    assert stream.rows == 50
    got_ids = [i for _, padded in groups for i in FixedWidthCopy.strings(padded).to_pylist()]
    got_X = np.vstack([np.ascontiguousarray(v).view("<f4") for v, _ in groups])
    assert got_ids == ids
    assert np.array_equal(got_X, X)
    if chunk < 10**6:
        assert len(groups) > 1  # streamed in groups, not all at once


def test_fixed_width_copy_refuses_a_truncated_stream():
    data = copy_stream(["a", "b"], np.ones((2, 2), dtype=np.float32), 1)
    stream = FixedWidthCopy([8, 1], rows_per_group=8, on_rows=lambda t: None)

    async def run() -> None:
        await stream.feed(data[:-5])
        await stream.finish()

    with pytest.raises(ValueError, match="unexpected bytes"):
        asyncio.run(run())


def test_fixed_width_copy_refuses_rows_of_another_width():
    data = copy_stream(["a", "bb"], np.ones((2, 2), dtype=np.float32), 2)
    stream = FixedWidthCopy([8, 3], rows_per_group=1, on_rows=lambda t: None)

    async def run() -> None:
        await stream.feed(data)
        await stream.finish()

    with pytest.raises(ValueError, match="expected"):
        asyncio.run(run())


# ------------------------------------------------------------------------ composite


def test_group_centroids_joins_similar_centroids_of_different_runs():
    rng = np.random.default_rng(5)
    topics = unit(rng.normal(size=(3, DIM)))
    # run A has topics 0, 1, 2; run B has 0 and 2, slightly moved, and one of its own.
    own = unit(rng.normal(size=(1, DIM)))
    vectors = np.vstack([topics, unit(topics[[0, 2]] + rng.normal(scale=0.03, size=(2, DIM))), own])
    sizes = np.array([10, 50, 20, 30, 5, 1])
    grouping = group_centroids(vectors, sizes)
    labels = grouping.labels.tolist()
    assert labels[0] == labels[3] and labels[2] == labels[4]
    assert len(set(labels)) == 4 and grouping.n_groups == 4
    assert grouping.sizes.tolist() == sorted(grouping.sizes.tolist(), reverse=True)  # largest first
    assert grouping.sizes[labels[1]] == 50 and grouping.sizes[labels[0]] == 40
    assert all(s > 0.99 for s in grouping.similarity[[0, 2, 3, 4]])
    # The group centroid is the member-weighted mean.
    expected = (vectors[0] * 10 + vectors[3] * 30) / 40
    assert np.allclose(grouping.centroids[labels[0]], expected, atol=1e-6)


def test_group_centroids_threshold_and_single_centroid():
    a, b = unit(np.array([[1.0, 0.0], [0.8, 0.6]]))  # cosine 0.8
    assert group_centroids(np.stack([a, b]), np.array([1, 1]), min_similarity=0.79).n_groups == 1
    assert group_centroids(np.stack([a, b]), np.array([1, 1]), min_similarity=0.81).n_groups == 2
    assert group_centroids(a[None], np.array([3])).labels.tolist() == [0]


# ------------------------------------------------------------------------- preparer


def test_assign_sampling_has_no_engine_cap():
    info = plan_assign(1_000_000, None)
    assert info.sampled == 1_000_000 and info.cap is None and info.reason is None
    info = plan_assign(500, 100)
    assert info.sampled == 100 and "sample_size 100" in info.reason


def test_a_kmeans_run_the_ray_engine_computes_is_sampled_to_the_ray_cap_the_others_keep_theirs():
    assert plan_sample(5_000_000, None, "kmeans", {}).sampled == 1_000_000
    on_ray = plan_sample(5_000_000, None, "kmeans", {}, on_ray=True)
    assert on_ray.sampled == 5_000_000 and on_ray.cap is None and on_ray.reason is None
    over = plan_sample(6_000_000, None, "kmeans", {}, on_ray=True)
    assert over.sampled == over.cap == 5_000_000 and "capped at 5,000,000" in over.reason
    # every other method runs as one task holding its matrix: the in-process caps stay
    assert plan_sample(200_000, None, "hdbscan", {}, on_ray=True).sampled == 50_000


CLUSTER = {"clustering_method": "hdbscan", "algorithm_params": {}, "embedding_name": "text", "vis_n_components": 2,
           "defer_visualization": False, "llm_labeling": LLMLabeling(enabled=True).model_dump(mode="json")}


def event(**options) -> ExecutionRequested:
    return ExecutionRequested(run_id="run_1", cluster_id="clust_1", task_id="task_1",
                              options=RunOptions(**options))


def test_derived_runs_skip_layout_and_the_clusters_llm_labeling():
    full = resolve_config(CLUSTER, event())
    assert full.llm_labeling.enabled and not full.defer_visualization and full.assignment_threshold is None
    assign = resolve_config(CLUSTER, event(mode=ExecutionMode.assign, assignment_threshold=0.7))
    assert assign.llm_labeling is None and assign.defer_visualization and assign.assignment_threshold == 0.7
    assert resolve_config(CLUSTER, event(mode=ExecutionMode.assign, assignment_threshold=None)
                          ).assignment_threshold == 0.5
    composite = resolve_config(CLUSTER, event(mode=ExecutionMode.composite,
                                              llm_labeling=LLMLabeling(enabled=True)))
    assert composite.llm_labeling.enabled  # an explicit per-run override still labels


def test_check_source_names_what_is_wrong():
    ok = {"status": "COMPLETED", "artifacts": {"members_key": "m"}, "num_clusters": 3}
    assert check_source(ok, "run_a") is None
    assert check_source({**ok, "status": "COMPLETED_WITH_ERRORS"}, "run_a") is None
    assert "does not exist" in check_source(None, "run_a")
    assert "is FAILED" in check_source({**ok, "status": "FAILED"}, "run_a")
    assert "no centroids" in check_source({**ok, "num_clusters": 0}, "run_a")


def test_the_clusters_preprocessing_steps_reach_the_clusterer_and_bad_ones_fail_the_run():
    from clusterflow.messaging import RunFailed

    assert resolve_config(CLUSTER, event()).preprocessing_steps is None
    steps = [{"method": "whitening", "regularization": 1e-5}]
    assert resolve_config({**CLUSTER, "preprocessing_steps": steps}, event()).preprocessing_steps == steps
    # A step stored before a rule changed (or written straight to the table) fails the run, clearly.
    with pytest.raises(RunFailed, match=r"preprocessing_steps\[0\]\.method"):
        resolve_config({**CLUSTER, "preprocessing_steps": [{"method": "tsne"}]}, event())
