"""layout_stability through the clusterer's S3 side, on the real S3 server: the previous
run's coordinates and projection read back by run key, the projection a `transform` run
fits or reuses stored with it, and a layout the Ray engine stored (written here as the
job writes it) kept in the previous run's shape afterwards, `transform` aligning there
and saying so."""
from __future__ import annotations

import asyncio

import numpy as np
import polars as pl
import pytest

from clusterflow.storage import S3ObjectStore, artifact_key, run_file_key
from contracts.api import LayoutStability
from contracts.events import ComputeLayout
from services.clusterer.engine.stability import loads
from services.clusterer.handler import PROJECTION_FILE, Clusterer, coords_frame
from tests.unit.test_layout_stability import displacement, grid_corpus

pytestmark = pytest.mark.integration
NS, CLUSTER = "stability", "clust_s"


@pytest.fixture(scope="module")
def store(settings):
    s = S3ObjectStore.from_settings(settings)
    s.ensure_bucket()
    return s


def command(run_id: str, setting: str, previous: str | None) -> ComputeLayout:
    return ComputeLayout(namespace=NS, cluster_id=CLUSTER, run_id=run_id, task_id=f"task_{run_id}",
                         manifest_key="unused", coords_key=artifact_key(NS, CLUSTER, run_id, "coords"),
                         num_points=0, layout_stability=setting, previous_run_id=previous, embedding_name="text")


def stored_coords(store, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    frame = store.get_parquet(artifact_key(NS, CLUSTER, run_id, "coords"))
    return frame["document_id"].to_numpy(), frame.select("x", "y").to_numpy()


def test_transform_runs_store_fit_and_reuse_projections_by_run_key(store, unique):
    clusterer = Clusterer(store=store, cache=None, ledger=None, publisher=None, processed=None, runs=None)
    draw = grid_corpus(seed=8)
    X = draw(300)
    ids = pl.Series("document_id", [f"d{i}" for i in range(300)])
    first, second, third = (f"run_{unique}_{n}" for n in (1, 2, 3))

    async def lay_out(run_id, X, ids, setting, previous):
        out = await clusterer._stable_layout(command(run_id, setting, previous), X, ids, LayoutStability(setting),
                                             previous, n_components=2, seed=42, embedding_name="text")
        # stored as the run stores it, for the next run to read
        store.put_parquet(artifact_key(NS, CLUSTER, run_id, "coords"), coords_frame(ids, out.coords))
        return out

    # The first run (align, the default): nothing before it; no projection stored.
    out = asyncio.run(lay_out(first, X, ids, "align", None))
    assert out.applied is LayoutStability.none and "no previous completed run" in out.reason
    assert not store.exists(run_file_key(NS, CLUSTER, first, PROJECTION_FILE))

    # transform after an align run: no projection to reuse, so it aligns (and says
    # why) and stores the projection it fitted.
    X2 = np.concatenate([X, draw(30)])
    ids2 = pl.concat([ids, pl.Series("document_id", [f"n{i}" for i in range(30)])])
    out = asyncio.run(lay_out(second, X2, ids2, "transform", first))
    assert out.applied is LayoutStability.align
    assert out.reason == (f"cannot transform: run {first} stored no fitted projection (it was laid out without "
                          f"layout_stability 'transform', or on the Ray engine); aligned to run {first} on 300 "
                          "shared documents")
    previous, data = clusterer._previous_layout(NS, CLUSTER, second, LayoutStability.transform)
    assert previous.projection is not None and previous.projection.fitted_by == second
    assert previous.projection.embedding_name == "text" and previous.projection.dimension == 16
    assert previous.ids.to_list() == ids2.to_list() and previous.coords.shape == (330, 2)

    # transform again: placed with the second run's projection, stored again with the
    # third run (the same bytes), and in the second run's frame.
    out = asyncio.run(lay_out(third, X2, ids2, "transform", second))
    assert out.applied is LayoutStability.transform
    assert out.reason == f"placed with the UMAP projection of run {second}"
    third_model = loads(clusterer._get_bytes(run_file_key(NS, CLUSTER, third, PROJECTION_FILE)))
    assert third_model.fitted_by == second and clusterer._get_bytes(
        run_file_key(NS, CLUSTER, third, PROJECTION_FILE)) == data
    second_ids, second_coords = stored_coords(store, second)
    assert displacement(out.coords, ids2.to_numpy(), second_coords, second_ids) < 0.1


def test_a_previous_run_without_a_stored_layout_is_a_reason_not_a_failure(store, unique, tmp_path):
    clusterer = Clusterer(store=store, cache=None, ledger=None, publisher=None, processed=None, runs=None)
    previous, data = clusterer._previous_layout(NS, CLUSTER, f"run_{unique}_never", LayoutStability.transform)
    assert previous.coords is None and previous.problem == "its layout was deferred and never computed"
    assert previous.projection is None and data is None
    # a corrupt projection object: its reason says so
    junk = tmp_path / "junk"
    junk.write_bytes(b"junk")
    store.upload(run_file_key(NS, CLUSTER, f"run_{unique}_broken", PROJECTION_FILE), str(junk))
    previous, _ = clusterer._previous_layout(NS, CLUSTER, f"run_{unique}_broken", LayoutStability.transform)
    assert previous.projection is None and "the stored projection cannot be read" in previous.projection_problem


@pytest.mark.parametrize("setting", ["align", "transform", "none"])
def test_a_layout_the_ray_engine_stored_is_kept_in_shape_afterwards(store, unique, setting):
    clusterer = Clusterer(store=store, cache=None, ledger=None, publisher=None, processed=None, runs=None)
    rng = np.random.default_rng(4)
    before_run, run_id = f"run_{unique}_prev_{setting}", f"run_{unique}_ray_{setting}"
    ids = pl.Series("document_id", [f"d{i}" for i in range(500)])
    before = rng.normal(size=(500, 2)).astype(np.float32)
    store.put_parquet(artifact_key(NS, CLUSTER, before_run, "coords"), coords_frame(ids, before))
    # what the Ray job wrote: the same documents, turned, mirrored, scaled, shifted
    turn = np.array([[0.0, 1.0], [1.0, 0.0]])
    raw_key = artifact_key(NS, CLUSTER, run_id, "coords-unaligned")
    store.put_parquet(raw_key, coords_frame(ids, (before @ turn * 5 + 3).astype(np.float32)))
    reports = []

    async def report(run, stabilized):
        assert not store.exists(artifact_key(NS, CLUSTER, run_id, "coords"))  # reported before it is served
        reports.append(stabilized)

    cmd = command(run_id, setting, before_run)
    out = asyncio.run(clusterer._stabilize_stored(cmd, raw_key, cmd.coords_key, LayoutStability(setting),
                                                  before_run, report=report))
    assert reports[0].applied is out.applied and reports[0].reason == out.reason
    got_ids, got = stored_coords(store, run_id)
    assert got_ids.tolist() == ids.to_list()
    if setting == "none":
        assert out.applied is LayoutStability.none and displacement(got, got_ids, before, ids.to_numpy()) > 1
        return
    assert out.applied is LayoutStability.align
    assert np.allclose(got, before, atol=1e-4)
    expected = f"aligned to run {before_run} on 500 shared documents"
    assert out.reason == (expected if setting == "align" else
                          f"cannot transform: the Ray engine lays out without keeping a projection; {expected}")
