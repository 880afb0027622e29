"""Manifests, the segment cache and the one reader of a run's vectors (no I/O but a
temporary folder; the object store is the in-memory fake)."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from clusterflow.datasets import write_dataset
from clusterflow.segments import Manifest, RunVectors, SegmentCache, SegmentRef, SegmentUnavailable
from tests.fakes import MemoryObjectStore

DIM = 8


def put_segment(store: MemoryObjectStore, key: str, ids: list[str], X: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.parquet")
        write_dataset(path, ids, X)
        store.upload(key, path)


@pytest.fixture
def world(tmp_path):
    rng = np.random.default_rng(0)
    store = MemoryObjectStore()
    data = {}
    refs = []
    for s in range(3):
        ids = [f"s{s}_d{i}" for i in range(100)]
        X = rng.normal(size=(100, DIM)).astype(np.float32)
        key = f"ns/segments/col/emb/seg{s}.parquet"
        put_segment(store, key, ids, X)
        refs.append(SegmentRef(segment_id=10 + s, key=key, num_rows=100))
        data.update(zip(ids, X))
    cache = SegmentCache(store, tmp_path / "cache", max_bytes=10**9)
    return store, cache, refs, data


def test_manifest_round_trips_and_orders_rows_by_segment(world, tmp_path):
    _, _, refs, _ = world
    segment_ids = np.array([12, 10, 12, 11, 10])
    rows = np.array([5, 7, 1, 0, 3])
    m = Manifest.build(DIM, refs, segment_ids, rows, {"filters": None, "matched": 5})
    assert [r.segment_id for r in m.segments] == [10, 11, 12]
    assert [(m.segments[s].segment_id, r) for s, r in zip(m.segment, m.row)] == [
        (10, 3), (10, 7), (11, 0), (12, 1), (12, 5)]
    m.write(str(tmp_path / "m.parquet"))
    back = Manifest.read(str(tmp_path / "m.parquet"))
    assert back.segments == m.segments and back.selection == {"filters": None, "matched": 5}
    assert np.array_equal(back.segment, m.segment) and np.array_equal(back.row, m.row)


def test_manifest_refuses_an_unregistered_segment(world):
    _, _, refs, _ = world
    with pytest.raises(ValueError, match="not registered"):
        Manifest.build(DIM, refs, np.array([99]), np.array([0]))


def test_reader_returns_exactly_the_manifest_rows_with_their_ids(world):
    _, cache, refs, data = world
    rng = np.random.default_rng(1)
    chosen = [(s, int(r)) for s in (10, 11, 12) for r in rng.choice(100, 30, replace=False)]
    chosen += [(11, r) for r in range(100) if (11, r) not in chosen]  # segment 11 whole
    m = Manifest.build(DIM, refs, np.array([c[0] for c in chosen]), np.array([c[1] for c in chosen]))
    ids, X = RunVectors(m, cache).load()
    ids = ids.to_pylist()
    assert len(ids) == len(set(ids)) == len(chosen)
    assert {(f"s{s - 10}_d{r}") for s, r in chosen} == set(ids)
    for i, doc in enumerate(ids):  # joined by id, never by position
        assert np.array_equal(X[i], data[doc])
    blocks = list(RunVectors(m, cache).blocks(block_rows=17))
    assert [i for b, _ in blocks for i in b.to_pylist()] == ids
    assert np.array_equal(np.vstack([x for _, x in blocks]), X)
    wanted = ids[:3] + ["not_in_run"]
    got = RunVectors(m, cache).vectors_for(wanted)
    assert set(got) == set(ids[:3]) and all(np.array_equal(got[k], data[k]) for k in got)


def test_a_second_read_downloads_nothing(world):
    store, cache, refs, _ = world
    m = Manifest.build(DIM, refs, np.repeat([10, 11, 12], 100), np.tile(np.arange(100), 3))
    RunVectors(m, cache).load()
    assert (cache.misses, cache.hits) == (3, 0) and store.downloads == 3
    before = store.downloaded_bytes
    RunVectors(m, cache).load()
    assert (cache.misses, cache.hits) == (3, 3)
    assert store.downloads == 3 and store.downloaded_bytes == before == cache.downloaded_bytes


def test_cache_evicts_least_recently_used_beyond_its_bound(world, tmp_path):
    store, _, refs, _ = world
    probe = SegmentCache(store, tmp_path / "probe", max_bytes=10**9)
    probe.ensure([refs[0]], DIM)
    stem = probe._stem(refs[0].key)
    entry = os.path.getsize(stem.with_suffix(".f32")) + os.path.getsize(stem.with_suffix(".ids"))
    cache = SegmentCache(store, tmp_path / "small", max_bytes=2 * entry + entry // 2)
    for age, ref in enumerate(refs):
        cache.ensure([ref], DIM)
        os.utime(cache._stem(ref.key).with_suffix(".f32"), (1000 + age, 1000 + age))
    assert not cache.has(refs[0].key) and cache.has(refs[1].key) and cache.has(refs[2].key)
    cache.ensure([refs[1]], DIM)  # used again: now the most recent, so 2 is the oldest
    cache.ensure([refs[0]], DIM)
    assert cache.has(refs[0].key) and cache.has(refs[1].key) and not cache.has(refs[2].key)


def test_a_missing_segment_is_named(world):
    store, cache, refs, _ = world
    del store.objects[refs[1].key]
    m = Manifest.build(DIM, refs, np.array([10, 11]), np.array([0, 0]))
    with pytest.raises(SegmentUnavailable, match="seg1.parquet.*missing"):
        RunVectors(m, cache).load()


def test_a_corrupt_segment_is_named_and_not_cached(world):
    store, cache, refs, _ = world
    store.objects[refs[2].key] = b"not parquet at all"
    m = Manifest.build(DIM, refs, np.array([12]), np.array([0]))
    with pytest.raises(SegmentUnavailable, match="seg2.parquet.*corrupt"):
        RunVectors(m, cache).load()
    assert not cache.has(refs[2].key)
    wrong_rows = SegmentRef(refs[0].segment_id, refs[0].key, 99)
    with pytest.raises(SegmentUnavailable, match="100 rows, the manifest says 99"):
        cache.ensure([wrong_rows], DIM)
