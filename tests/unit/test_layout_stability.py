"""layout_stability (services/clusterer/engine/layout.py, engine/stability.py): the
similarity transform over the shared documents, what each setting applies and why, and
the displacement of shared documents between two runs with and without it."""
from __future__ import annotations

import numpy as np
import pytest

from contracts.api import LayoutStability
from services.clusterer.engine.layout import Similarity, align_to_previous, project, register
from services.clusterer.engine.stability import (
    PreviousLayout,
    Projection,
    dumps,
    lay_out,
    loads,
    stabilize_computed,
)


def displacement(a: np.ndarray, a_ids, b: np.ndarray, b_ids) -> float:
    """Mean distance a shared document moved, as a share of the previous layout's extent."""
    where = {d: i for i, d in enumerate(b_ids)}
    rows = [(i, where[d]) for i, d in enumerate(a_ids) if d in where]
    new, old = (np.array(r) for r in zip(*rows))
    return float(np.linalg.norm(a[new] - b[old], axis=1).mean() / np.ptp(b, axis=0).max())


def turned(angle: float, mirror: bool) -> np.ndarray:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rotation @ np.diag([1, -1]) if mirror else rotation


# ---------------------------------------------------------------------- the math


def test_a_rotated_mirrored_scaled_shifted_layout_is_put_back():
    rng = np.random.default_rng(0)
    previous = rng.normal(size=(500, 2)).astype(np.float32)
    ids = np.array([f"d{i}" for i in range(500)])
    # This run: 400 of the documents (in another order), moved, plus 100 new ones.
    keep = rng.permutation(500)[:400]
    moved = (previous[keep] @ turned(1.1, True) * 3.0 + [5, -2] + rng.normal(scale=0.01, size=(400, 2)))
    coords = np.concatenate([moved, rng.normal(size=(100, 2))]).astype(np.float32)
    new_ids = np.concatenate([ids[keep], [f"new{i}" for i in range(100)]])
    aligned, applied, reason = align_to_previous(coords, new_ids, previous, ids)
    assert applied and reason == "aligned on 400 shared documents"
    assert displacement(coords, new_ids, previous, ids) > 0.5
    assert displacement(aligned, new_ids, previous, ids) < 0.005
    assert aligned.dtype == np.float32 and aligned.shape == coords.shape


@pytest.mark.parametrize("mirror", [False, True])
def test_register_recovers_the_exact_transform_in_3d_too(mirror):
    rng = np.random.default_rng(1)
    previous = rng.normal(size=(50, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q if (np.linalg.det(q) < 0) == mirror else q @ np.diag([1, 1, -1])
    truth = Similarity(q, 0.25, np.array([1.0, 2.0, -3.0]))
    # new = truth^-1(previous): register must find truth
    new = (previous - truth.shift) @ q.T / truth.scale
    ids = np.array([f"d{i}" for i in range(50)], dtype=object)
    _, shared, _ = register(new, ids, previous, ids)
    assert shared == 50
    # the same ids, reversed on one side only: rows are joined by id, not position
    found, shared, _ = register(new[::-1], ids[::-1], previous, ids)
    assert np.allclose(found.rotation, q) and found.scale == pytest.approx(0.25)
    assert np.allclose(found.shift, truth.shift) and np.allclose(found.apply(new[::-1]), previous[::-1])
    assert (np.linalg.det(found.rotation) < 0) == mirror


def test_alignment_is_refused_with_its_reason():
    coords, ids = np.zeros((20, 2), np.float32), np.array([f"d{i}" for i in range(20)])
    same, applied, reason = align_to_previous(coords, ids, np.ones((20, 3), np.float32), ids)
    assert not applied and same is coords and "3 dimensions" in reason
    _, applied, reason = align_to_previous(coords, ids, np.ones((5, 2), np.float32), ids[:5])
    assert not applied and reason == "5 shared documents with the previous run (fewer than 10)"
    _, applied, reason = align_to_previous(coords, ids, np.ones((20, 2), np.float32), ids)
    assert not applied and reason == "the shared documents sit on one point"
    broken = np.full((20, 2), np.nan, np.float32)
    _, applied, reason = align_to_previous(np.random.default_rng(0).normal(size=(20, 2)), ids, broken, ids)
    assert not applied and "not finite" in reason


# ------------------------------------------------ what each setting applies and why

# Up to 15 points the layout is PCA (no UMAP): the decisions are checked fast.
SMALL = np.random.default_rng(2).normal(size=(15, 6)).astype(np.float32)
SMALL_IDS = np.array([f"s{i}" for i in range(15)], dtype=object)


def small(setting, previous, **kw):
    return lay_out(SMALL, SMALL_IDS, setting, previous, n_components=2, seed=42, embedding_name="text",
                   run_id="run_new", **kw)


def previous_of(coords, **kw) -> PreviousLayout:
    return PreviousLayout(run_id="run_old", ids=SMALL_IDS, coords=coords, **kw)


def test_none_is_a_fresh_layout_even_with_a_previous_one():
    fresh = project(SMALL, 2, 42)
    out = small("none", previous_of(fresh @ turned(2.0, True) + 7))
    assert out.applied is LayoutStability.none and out.reason == "layout_stability 'none': a fresh layout"
    assert np.array_equal(out.coords, fresh) and out.projection is None


def test_align_puts_this_layout_onto_the_previous_one():
    before = project(SMALL, 2, 42) @ turned(2.0, True) * 4 + [3, 1]
    out = small(LayoutStability.align, previous_of(before.astype(np.float32)))
    assert out.applied is LayoutStability.align
    assert out.reason == "aligned to run run_old on 15 shared documents"
    assert np.allclose(out.coords, before, atol=1e-4)


@pytest.mark.parametrize("previous,reason", [
    (None, "no previous completed run of this cluster to keep the shape of: a fresh layout"),
    (PreviousLayout(run_id="run_old", problem="its layout was deferred and never computed"),
     "run run_old has no layout to align to (its layout was deferred and never computed): a fresh layout"),
    (PreviousLayout(run_id="run_old", ids=SMALL_IDS[:4], coords=np.ones((4, 2), np.float32)),
     "not aligned to run run_old: 4 shared documents with the previous run (fewer than 10): a fresh layout"),
])
def test_align_without_something_to_align_to_says_why(previous, reason):
    out = small("align", previous)
    assert out.applied is LayoutStability.none and out.reason == reason
    assert np.array_equal(out.coords, project(SMALL, 2, 42))


class ShiftingReducer:
    """A stand-in for a fitted UMAP model (what `transform_rows` calls): places each
    row at its first two values plus a shift. Module level: it must pickle."""

    n_components = 2

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def transform(self, X):
        return np.asarray(X)[:, :2] + self.shift


def projection(**kw) -> Projection:
    values = dict(reducer=ShiftingReducer(10.0), frame=Similarity(turned(0.5, False), 2.0, np.array([1.0, -1.0])),
                  embedding_name="text", dimension=6, n_components=2, fitted_by="run_first")
    return Projection(**{**values, **kw})


def test_transform_places_the_documents_with_the_previous_projection_in_its_frame():
    model = projection()
    out = small("transform", previous_of(np.ones((15, 2), np.float32), projection=model))
    assert out.applied is LayoutStability.transform and out.projection is model
    assert out.reason == "placed with the UMAP projection of run run_old (fitted by run run_first)"
    expected = (SMALL[:, :2] + 10.0) @ (2.0 * turned(0.5, False)) + [1.0, -1.0]
    assert np.allclose(out.coords, expected, atol=1e-5)


@pytest.mark.parametrize("model,problem", [
    (None, "run run_old stored no fitted projection (it was laid out with 'align')"),
    (projection(embedding_name="image"), "the projection of run run_old was fitted on embedding 'image' "
     "(6 dimensions), this run has 'text' (6)"),
    (projection(dimension=8), "the projection of run run_old was fitted on embedding 'text' (8 dimensions), "
     "this run has 'text' (6)"),
    (projection(n_components=3), "the projection of run run_old has 3 components, this run asks for 2"),
])
def test_transform_falls_back_to_align_and_says_why(model, problem):
    before = (project(SMALL, 2, 42) @ turned(1.0, False) + 5).astype(np.float32)
    out = small("transform", previous_of(before, projection=model,
                                         projection_problem="it was laid out with 'align'"))
    assert out.applied is LayoutStability.align
    assert out.reason == f"cannot transform: {problem}; aligned to run run_old on 15 shared documents"
    assert np.allclose(out.coords, before, atol=1e-4)
    assert out.projection is None  # 15 points: PCA, no model for the next run to reuse


def test_a_layout_computed_elsewhere_aligns_for_transform_and_says_why():
    coords = project(SMALL, 2, 42)
    before = (coords @ turned(1.0, True) + 5).astype(np.float32)
    out = stabilize_computed(coords, SMALL_IDS, "transform", previous_of(before), cannot_transform="not on Ray")
    assert out.applied is LayoutStability.align and np.allclose(out.coords, before, atol=1e-4)
    assert out.reason == "cannot transform: not on Ray; aligned to run run_old on 15 shared documents"
    out = stabilize_computed(coords, SMALL_IDS, "align", previous_of(before), cannot_transform="not on Ray")
    assert out.reason == "aligned to run run_old on 15 shared documents"
    out = stabilize_computed(coords, SMALL_IDS, "none", previous_of(before), cannot_transform="not on Ray")
    assert out.applied is LayoutStability.none and out.coords is coords


def test_a_projection_survives_its_stored_form_and_garbage_is_refused():
    back = loads(dumps(projection()))
    assert (back.embedding_name, back.dimension, back.n_components, back.fitted_by) == ("text", 6, 2, "run_first")
    assert np.allclose(back.place(SMALL), projection().place(SMALL))
    with pytest.raises(ValueError, match="cannot be read"):
        loads(b"not a pickle")
    import pickle
    with pytest.raises(ValueError, match="unknown format"):
        loads(pickle.dumps({"format": 99}))


# ------------------------------------------- displacement between two runs (UMAP)


def grid_corpus(seed: int = 5):
    """9 groups on a 3x3 grid in a random plane of 16 dimensions: a global shape that a
    layout can keep (random, equidistant groups have none to keep)."""
    rng = np.random.default_rng(seed)
    plane = np.linalg.qr(rng.normal(size=(16, 2)))[0].T
    centers = np.array([(i, j) for i in range(3) for j in range(3)], float) * 6 @ plane

    def draw(n):
        return (centers[rng.integers(0, 9, n)] + rng.normal(size=(n, 16))).astype(np.float32)

    return draw


def test_shared_documents_move_much_less_between_two_runs_when_aligned():
    draw = grid_corpus()
    X, ids = draw(450), np.array([f"d{i}" for i in range(450)], dtype=object)
    first = lay_out(X, ids, "align", None, n_components=2, seed=42, embedding_name="text", run_id="run_1")
    assert first.applied is LayoutStability.none  # nothing before it
    previous = PreviousLayout(run_id="run_1", ids=ids, coords=first.coords)
    # The next run: the same documents and 45 new ones (the usual case), and, to be
    # sure it is not luck, one with another seed as well.
    X2 = np.concatenate([X, draw(45)])
    ids2 = np.concatenate([ids, [f"n{i}" for i in range(45)]])
    figures = {}
    for seed in (42, 7):
        fresh = lay_out(X2, ids2, "none", previous, n_components=2, seed=seed, embedding_name="text", run_id="run_2")
        aligned = lay_out(X2, ids2, "align", previous, n_components=2, seed=seed, embedding_name="text",
                          run_id="run_2")
        assert aligned.applied is LayoutStability.align
        assert aligned.reason == "aligned to run run_1 on 450 shared documents"
        figures[seed] = (displacement(fresh.coords, ids2, first.coords, ids),
                         displacement(aligned.coords, ids2, first.coords, ids))
    print("shared documents moved (share of the extent) without / with alignment:",
          {s: (round(a, 3), round(b, 3)) for s, (a, b) in figures.items()})
    # Measured on this box: seed 42 0.51 / 0.08, seed 7 0.44 / 0.06.
    for without, with_ in figures.values():
        assert with_ < 0.35 * without


def test_transform_keeps_shared_documents_close():
    """`transform`: the first run fits a model and keeps it; the next run places its
    documents with it, so shared documents barely move."""
    draw = grid_corpus(seed=6)
    X, ids = draw(400), np.array([f"d{i}" for i in range(400)], dtype=object)
    first = lay_out(X, ids, "transform", None, n_components=2, seed=42, embedding_name="text", run_id="run_1")
    assert first.applied is LayoutStability.none and first.projection is not None
    assert first.reason == "no previous completed run of this cluster to keep the shape of: a fresh layout"
    model = loads(dumps(first.projection))  # as the clusterer stores and reads it
    previous = PreviousLayout(run_id="run_1", ids=ids, coords=first.coords, projection=model)
    X2 = np.concatenate([X, draw(40)])
    ids2 = np.concatenate([ids, [f"n{i}" for i in range(40)]])
    placed = lay_out(X2, ids2, "transform", previous, n_components=2, seed=42, embedding_name="text",
                     run_id="run_2")
    assert placed.applied is LayoutStability.transform
    assert placed.reason == "placed with the UMAP projection of run run_1"
    moved = displacement(placed.coords, ids2, first.coords, ids)
    print(f"transform: shared documents moved {moved:.3f} of the extent")
    assert moved < 0.1  # measured 0.043; a fresh layout of such data moves them 0.4-0.5
