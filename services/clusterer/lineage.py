"""Stable identities of a run's groups of points across the full runs of one cluster
definition (docs/vocabulary.md; the REST edge calls a group a cluster). No I/O.

Each full run's groups are matched to the groups of the cluster definition's
previous completed full run. A matched group keeps the previous group's stable id
(``"sc_<12 hex>"``) and its label; an unmatched one gets a fresh id, derived from the
run id and its group id so that a redelivered run gets the very same ids.

**Similarity.** Noise is never a group here.

- ``members`` basis, when the two runs share documents: at least
  ``MIN_SHARED_FRACTION`` of the smaller run's documents appear in both runs. Over the
  shared documents S only, ``n(p, c) = |p ∩ c ∩ S|`` and the similarity is the Jaccard
  index ``n / (|p ∩ S| + |c ∩ S| - n)``. Restricting to S makes documents added or
  removed between the runs count for nothing: a group that doubled with new
  documents still has similarity 1 to its previous self.
- ``centroids`` basis, otherwise: the cosine similarity of the two centroids.

**Matching.** One to one, maximising the total similarity
(``scipy.optimize.linear_sum_assignment``); a pair is kept only when its similarity is
at least ``MIN_JACCARD`` (members) or ``MIN_COSINE`` (centroids).

**Events.** With ``share(p, c) = n(p, c) / |p ∩ S|``, the fraction of the previous
group p's shared documents that went to the current group c (noise included in the
denominator, so members lost to noise count against every share):

- ``split``: one previous group whose members went mostly to 2+ current groups:
  at least two groups c with ``share(p, c) >= SPLIT_PART`` that together hold at
  least ``MOSTLY`` of p. Centroids basis: p is the most similar previous centroid
  (cosine >= ``MIN_COSINE``) of at least two current groups.
- ``merged``: 2+ previous groups whose members went mostly into one current group:
  at least two p with ``share(p, c) >= MOSTLY`` for the same c. Centroids basis: c is
  the most similar current centroid (cosine >= ``MIN_COSINE``) of at least two
  previous groups.
- ``continued``: a matched pair (p, c) where p did not split and c is not a merge: c
  keeps p's stable id and label.
- ``new``: a current group neither matched nor part of a split or a merge.
- ``dissolved``: a previous group neither matched nor part of a split or a merge
  (its members went to noise or scattered over groups that are mostly others').

In a split or a merge the matched pair, if any, still carries the stable id on (the
largest part of a split, the most similar member of a merge); the other current
groups of a split get fresh ids, the other previous groups of a merge end. So every
current group appears in ``continued`` or ``new`` or in at least one ``split``/
``merged``; every previous group in ``continued`` or ``dissolved`` or in at least one
``split``/``merged``.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

from contracts.api import NOISE_GROUP_ID

NOISE_KEY = NOISE_GROUP_ID
MIN_SHARED_FRACTION = 0.2
MIN_JACCARD = 0.3
MIN_COSINE = 0.8
SPLIT_PART = 0.2
MOSTLY = 0.5

_STABLE_NAMESPACE = uuid.UUID("0d5b6a52-3f43-4d0e-9d0b-8d8f1f6f3c21")


def new_stable_id(run_id: str, group_key: str) -> str:
    """A fresh stable id, deterministic in the run and the group it is born in."""
    return "sc_" + uuid.uuid5(_STABLE_NAMESPACE, f"{run_id}/{group_key}").hex[:12]


@dataclass(frozen=True)
class RunGroups:
    """One run's groups (noise excluded): keys ``"cl_N"``, centroids row-aligned, and
    for the previous run their stable ids. ``members`` has ``document_id`` and
    ``cluster_id`` (the members parquet's name of the group) for every document of the
    run (noise included), or is None when unknown."""

    keys: list[str]
    vectors: np.ndarray
    stable_ids: list[str] | None = None
    members: pl.DataFrame | None = None


@dataclass
class Event:
    kind: Literal["continued", "split", "merged", "new", "dissolved"]
    previous: list[str] = field(default_factory=list)  # previous run's group keys
    current: list[str] = field(default_factory=list)  # this run's group keys
    similarity: float | None = None


@dataclass
class Match:
    basis: Literal["members", "centroids"] | None
    shared_documents: int
    stable_ids: dict[str, str]  # current key -> its stable id (kept or fresh)
    inherited: dict[str, str]  # current key -> the previous key whose id and label it keeps
    events: list[Event]


def first_run(run_id: str, keys: list[str]) -> Match:
    """No previous run: every group is new."""
    return Match(basis=None, shared_documents=0,
                 stable_ids={k: new_stable_id(run_id, k) for k in keys}, inherited={},
                 events=[Event("new", current=[k]) for k in keys])


def match_groups(previous: RunGroups, current: RunGroups, run_id: str, *,
                 min_jaccard: float = MIN_JACCARD, min_cosine: float = MIN_COSINE) -> Match:
    """Match ``current`` to ``previous`` (see the module docstring for the rules)."""
    if previous.stable_ids is None or len(previous.stable_ids) != len(previous.keys):
        raise ValueError("the previous run's groups need their stable ids")
    P, C = len(previous.keys), len(current.keys)
    if P == 0 or C == 0:
        match = first_run(run_id, current.keys)
        match.events += [Event("dissolved", previous=[k]) for k in previous.keys]
        return match

    overlap = _overlap(previous, current)
    if overlap is not None:
        basis, shared = "members", overlap.shared
        counts, p_sizes, c_sizes = overlap.counts, overlap.p_sizes, overlap.c_sizes
        union = p_sizes[:, None] + c_sizes[None, :] - counts
        similarity = np.divide(counts, union, out=np.zeros((P, C)), where=union > 0)
        share = np.divide(counts, p_sizes[:, None], out=np.zeros((P, C)), where=p_sizes[:, None] > 0)
        threshold = min_jaccard
        splits = {p: cs for p in range(P)
                  if len(cs := [c for c in np.argsort(-share[p], kind="stable") if share[p, c] >= SPLIT_PART]) >= 2
                  and share[p, cs].sum() >= MOSTLY}
        merges = {c: ps for c in range(C)
                  if len(ps := [p for p in np.argsort(-share[:, c], kind="stable") if share[p, c] >= MOSTLY]) >= 2}
    else:
        basis, shared = "centroids", 0
        similarity = _cosine(previous.vectors, current.vectors)
        threshold = min_cosine
        origin = np.where(similarity.max(axis=0) >= min_cosine, similarity.argmax(axis=0), -1)  # per current
        destination = np.where(similarity.max(axis=1) >= min_cosine, similarity.argmax(axis=1), -1)  # per previous
        splits = {p: cs for p in range(P)
                  if len(cs := sorted(np.flatnonzero(origin == p), key=lambda c: -similarity[p, c])) >= 2}
        merges = {c: ps for c in range(C)
                  if len(ps := sorted(np.flatnonzero(destination == c), key=lambda p: -similarity[p, c])) >= 2}

    rows, cols = linear_sum_assignment(similarity, maximize=True)
    pairs = {int(c): int(p) for p, c in zip(rows, cols) if similarity[p, c] >= threshold}

    stable_ids, inherited = {}, {}
    for c, key in enumerate(current.keys):
        if c in pairs:
            stable_ids[key] = previous.stable_ids[pairs[c]]
            inherited[key] = previous.keys[pairs[c]]
        else:
            stable_ids[key] = new_stable_id(run_id, key)

    in_split_p = set(splits)
    in_split_c = {int(c) for cs in splits.values() for c in cs}
    in_merge_c = set(merges)
    in_merge_p = {int(p) for ps in merges.values() for p in ps}
    matched_p = set(pairs.values())

    events: list[Event] = []
    for c in sorted(pairs):
        p = pairs[c]
        if p not in in_split_p and c not in in_merge_c:
            events.append(Event("continued", previous=[previous.keys[p]], current=[current.keys[c]],
                                similarity=round(float(similarity[p, c]), 6)))
    for p, cs in sorted(splits.items()):
        events.append(Event("split", previous=[previous.keys[p]], current=[current.keys[int(c)] for c in cs]))
    for c, ps in sorted(merges.items()):
        events.append(Event("merged", previous=[previous.keys[int(p)] for p in ps], current=[current.keys[c]]))
    for c, key in enumerate(current.keys):
        if c not in pairs and c not in in_split_c and c not in in_merge_c:
            events.append(Event("new", current=[key]))
    for p, key in enumerate(previous.keys):
        if p not in matched_p and p not in in_split_p and p not in in_merge_p:
            events.append(Event("dissolved", previous=[key]))
    return Match(basis=basis, shared_documents=shared, stable_ids=stable_ids, inherited=inherited, events=events)


@dataclass
class _Overlap:
    shared: int
    counts: np.ndarray  # (P, C) shared documents in both p and c
    p_sizes: np.ndarray  # (P,) shared documents of p (whatever they are now, noise included)
    c_sizes: np.ndarray  # (C,) shared documents of c


def _overlap(previous: RunGroups, current: RunGroups) -> _Overlap | None:
    """Contingency counts over the shared documents; None when too few are shared."""
    if previous.members is None or current.members is None:
        return None
    prev = previous.members.select("document_id", pl.col("cluster_id").alias("p")).unique("document_id", keep="first")
    cur = current.members.select("document_id", pl.col("cluster_id").alias("c")).unique("document_id", keep="first")
    smaller = min(prev.height, cur.height)
    joined = prev.join(cur, on="document_id", how="inner")
    shared = joined.height
    if shared == 0 or shared < MIN_SHARED_FRACTION * smaller:
        return None
    p_index = {k: i for i, k in enumerate(previous.keys)}
    c_index = {k: i for i, k in enumerate(current.keys)}
    P, C = len(previous.keys), len(current.keys)
    counts = np.zeros((P, C))
    p_sizes, c_sizes = np.zeros(P), np.zeros(C)
    for p, c, n in joined.group_by("p", "c").len().iter_rows():
        i, j = p_index.get(p), c_index.get(c)
        if i is not None:
            p_sizes[i] += n
        if j is not None:
            c_sizes[j] += n
        if i is not None and j is not None:
            counts[i, j] += n
    return _Overlap(shared=shared, counts=counts, p_sizes=p_sizes, c_sizes=c_sizes)


def _cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        return np.zeros((len(A), len(B)))
    a = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    b = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    return a @ b.T
