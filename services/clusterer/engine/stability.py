"""layout_stability: a run's map keeps the shape of the previous run's (arrays in,
arrays out; the handler reads the previous run's layout and projection from S3).

- ``align`` (the default): the new layout, fitted fresh, is registered onto the
  previous run's coordinates by the similarity transform over the shared documents
  (`layout.register`), joined by document id.
- ``transform``: the previous run's fitted UMAP model places this run's documents, when
  it was fitted on the same embedding, dimension and number of components. Otherwise
  this run fits a model of its own (stored for the next run), aligns as ``align`` does,
  and says why it could not transform.
- ``none``: a fresh layout.

What was applied and why is returned with the coordinates (`Stabilized`), for the run
to report (`layout_stability_applied`, `layout_stability_reason`).
"""
from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from contracts.api import LayoutStability

from .layout import N_NEIGHBORS, Similarity, fit_projection, project, register, transform_rows

__all__ = ["PreviousLayout", "Projection", "Stabilized", "align_onto", "dumps", "lay_out", "loads",
           "stabilize_computed"]

PROJECTION_FORMAT = 1
Ids = Any  # a layout's document ids, row by row: a numpy array or a polars Series of strings


@dataclass(frozen=True)
class Projection:
    """A fitted UMAP model as a run keeps it: `frame` maps the model's own output onto
    the coordinates that run stored (its alignment, or the identity)."""

    reducer: Any  # umap.UMAP, fitted with `fit_landmarks` (it can place new points)
    frame: Similarity
    embedding_name: str
    dimension: int
    n_components: int
    fitted_by: str  # the run that fitted it (later runs reuse it unchanged)

    def place(self, X: np.ndarray) -> np.ndarray:
        return self.frame.apply(transform_rows(self.reducer, X))


@dataclass(frozen=True)
class PreviousLayout:
    """The layout this run keeps the shape of. `coords` None: it has none (`problem`
    says why); `projection` is read only for ``transform`` (None: `projection_problem`)."""

    run_id: str
    ids: Ids = None
    coords: np.ndarray | None = None
    problem: str | None = None
    projection: Projection | None = None
    projection_problem: str | None = None


@dataclass(frozen=True)
class Stabilized:
    coords: np.ndarray
    applied: LayoutStability
    reason: str
    # transform: the model to store with this run, for the next run to reuse
    projection: Projection | None = None


def lay_out(
    X: np.ndarray, ids: Ids, setting: LayoutStability, previous: PreviousLayout | None, *,
    n_components: int, seed: int, embedding_name: str, run_id: str,
    on_progress: Callable[[float], None] | None = None,
) -> Stabilized:
    """This run's coordinates for the rows of `X` (ids `ids`), kept in the previous
    run's shape as `setting` asks, with what was applied and why."""
    setting = LayoutStability(setting)
    if setting is LayoutStability.none:
        return Stabilized(project(X, n_components, seed, on_progress=on_progress), LayoutStability.none,
                          "layout_stability 'none': a fresh layout")
    if setting is LayoutStability.align:
        return align_onto(project(X, n_components, seed, on_progress=on_progress), ids, previous)

    problem = _cannot_transform(previous, embedding_name, X.shape[1], n_components)
    if problem is None:
        coords = previous.projection.place(X)
        if on_progress is not None:
            on_progress(1.0)
        return Stabilized(coords, LayoutStability.transform,
                          f"placed with the UMAP projection of run {previous.run_id}"
                          + (f" (fitted by run {previous.projection.fitted_by})"
                             if previous.projection.fitted_by != previous.run_id else ""),
                          projection=previous.projection)
    if len(X) > N_NEIGHBORS:
        coords, reducer = fit_projection(X, n_components, seed, on_progress=on_progress)
        own = Projection(reducer, Similarity.identity(n_components), embedding_name, X.shape[1], n_components,
                         fitted_by=run_id)
    else:  # too few points for UMAP: no model to keep
        coords, own = project(X, n_components, seed, on_progress=on_progress), None
    aligned, frame = _align(coords, ids, previous)
    if own is not None and frame is not None:
        own = replace(own, frame=frame)
    reason = aligned.reason if previous is None else f"cannot transform: {problem}; {aligned.reason}"
    return replace(aligned, reason=reason, projection=own)


def stabilize_computed(coords: np.ndarray, ids: Ids, setting: LayoutStability,
                       previous: PreviousLayout | None, *, cannot_transform: str) -> Stabilized:
    """A layout computed elsewhere (the Ray engine), kept in the previous run's shape as
    far as it can be afterwards: `transform` aligns, and says why (`cannot_transform`)."""
    setting = LayoutStability(setting)
    if setting is LayoutStability.none:
        return Stabilized(coords, LayoutStability.none, "layout_stability 'none': a fresh layout")
    aligned = align_onto(coords, ids, previous)
    if setting is LayoutStability.transform:
        return replace(aligned, reason=f"cannot transform: {cannot_transform}; {aligned.reason}")
    return aligned


def align_onto(coords: np.ndarray, ids: Ids, previous: PreviousLayout | None) -> Stabilized:
    """`coords` registered onto the previous layout, or returned as they are with the reason."""
    return _align(coords, ids, previous)[0]


def _align(coords: np.ndarray, ids: Ids, previous: PreviousLayout | None
           ) -> tuple[Stabilized, Similarity | None]:
    if previous is None:
        return Stabilized(coords, LayoutStability.none,
                          "no previous completed run of this cluster to keep the shape of: a fresh layout"), None
    if previous.coords is None:
        return Stabilized(coords, LayoutStability.none,
                          f"run {previous.run_id} has no layout to align to ({previous.problem}): a fresh layout"), None
    frame, shared, why = register(coords, ids, previous.coords, previous.ids)
    if frame is None:
        return Stabilized(coords, LayoutStability.none,
                          f"not aligned to run {previous.run_id}: {why}: a fresh layout"), None
    return Stabilized(frame.apply(coords), LayoutStability.align,
                      f"aligned to run {previous.run_id} on {shared} shared documents"), frame


def _cannot_transform(previous: PreviousLayout | None, embedding_name: str, dimension: int,
                      n_components: int) -> str | None:
    """Why the previous run's projection cannot place this run's documents (None: it can)."""
    if previous is None:
        return "no previous completed run of this cluster"
    model = previous.projection
    if model is None:
        return f"run {previous.run_id} stored no fitted projection ({previous.projection_problem})"
    if (model.embedding_name, model.dimension) != (embedding_name, dimension):
        return (f"the projection of run {previous.run_id} was fitted on embedding {model.embedding_name!r} "
                f"({model.dimension} dimensions), this run has {embedding_name!r} ({dimension})")
    if model.n_components != n_components:
        return (f"the projection of run {previous.run_id} has {model.n_components} components, "
                f"this run asks for {n_components}")
    return None


def dumps(projection: Projection) -> bytes:
    """The stored form of a projection (pickle: umap-learn's own way to keep a model;
    only the service's bucket holds it and only the clusterer reads it)."""
    frame = projection.frame
    return pickle.dumps({
        "format": PROJECTION_FORMAT, "reducer": projection.reducer, "rotation": frame.rotation,
        "scale": frame.scale, "shift": frame.shift, "embedding_name": projection.embedding_name,
        "dimension": projection.dimension, "n_components": projection.n_components,
        "fitted_by": projection.fitted_by,
    }, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Projection:
    try:
        stored = pickle.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any unreadable object is the same problem
        raise ValueError(f"the stored projection cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(stored, dict) or stored.get("format") != PROJECTION_FORMAT:
        raise ValueError("the stored projection has an unknown format")
    return Projection(
        reducer=stored["reducer"],
        frame=Similarity(np.asarray(stored["rotation"]), float(stored["scale"]), np.asarray(stored["shift"])),
        embedding_name=stored["embedding_name"], dimension=int(stored["dimension"]),
        n_components=int(stored["n_components"]), fitted_by=stored["fitted_by"])
