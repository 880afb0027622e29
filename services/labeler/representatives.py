"""Which members speak for a cluster: near its centroid, and spread across it.

Only the `per_cluster` members nearest the centroid are ever read (a candidate pool;
cheap on a 1M-point run). From the pool, half the samples are the nearest members
(what the cluster is about), the rest are picked by farthest-point sampling over their
vectors (what else it holds), so a cluster with two themes shows both.

How many: `max_samples_per_cluster` when given, else 3..20 growing with the cluster's
size (log scale) and its spread relative to the run's typical cluster. No I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from contracts.api import NOISE_GROUP_ID

NOISE = NOISE_GROUP_ID
MIN_AUTO, MAX_AUTO = 3, 20


@dataclass
class GroupPool:
    group_id: str
    size: int  # all members of the group
    spread: float  # mean distance to the centroid over all members
    ids: list[str]  # the nearest members, nearest first
    distances: np.ndarray


def pools(members: pl.DataFrame, per_cluster: int, total: int | None = None) -> list[GroupPool]:
    """Each non-noise group's nearest members, largest groups first.

    `total` bounds the members kept over all clusters (each keeps at least 20)."""
    real = members.filter(pl.col("cluster_id") != NOISE)
    if real.height == 0:
        return []
    stats = (real.group_by("cluster_id")
             .agg(pl.len().alias("size"), pl.col("distance_to_centroid").fill_nan(None).mean().alias("spread"))
             .sort(["size", "cluster_id"], descending=[True, False]))
    if total is not None:
        per_cluster = max(min(per_cluster, total // max(stats.height, 1)), min(per_cluster, 20))
    nearest = (real.sort(["cluster_id", "distance_to_centroid", "document_id"], nulls_last=True)
               .group_by("cluster_id", maintain_order=True).head(per_cluster))
    grouped = {
        key[0]: frame for key, frame in nearest.group_by("cluster_id", maintain_order=True)
    }
    out = []
    for row in stats.iter_rows(named=True):
        frame = grouped[row["cluster_id"]]
        out.append(GroupPool(
            group_id=row["cluster_id"], size=int(row["size"]),
            spread=float(row["spread"]) if row["spread"] is not None else 0.0,
            ids=frame["document_id"].to_list(),
            distances=frame["distance_to_centroid"].fill_nan(None).fill_null(0.0).to_numpy().astype(np.float64),
        ))
    return out


def auto_sample_count(size: int, spread: float, typical_spread: float) -> int:
    """3..20 samples: +3 per tenfold growth in size, scaled by relative spread."""
    base = MIN_AUTO + 3.0 * math.log10(max(size, 1))
    factor = 1.0
    if typical_spread > 0 and spread > 0:
        factor = min(max(spread / typical_spread, 0.6), 1.5)
    return int(min(max(round(base * factor), MIN_AUTO), MAX_AUTO, max(size, 1)))


def sample_counts(pool_list: list[GroupPool], fixed: int | None) -> dict[str, int]:
    if fixed is not None:
        return {p.group_id: min(fixed, p.size) for p in pool_list}
    spreads = [p.spread for p in pool_list if p.spread > 0]
    typical = float(np.median(spreads)) if spreads else 0.0
    return {p.group_id: auto_sample_count(p.size, p.spread, typical) for p in pool_list}


def select(ids: list[str], vectors: np.ndarray | None, k: int) -> list[str]:
    """`k` of `ids` (ordered nearest first): the nearest half, then farthest-point
    sampling over `vectors` (rows aligned with `ids`; None: nearest only)."""
    k = min(k, len(ids))
    if k <= 0:
        return []
    if vectors is None or len(ids) <= k:
        return list(ids[:k])
    n_near = max(1, math.ceil(k / 2))
    chosen = list(range(n_near))
    X = np.asarray(vectors, dtype=np.float64)
    # Distance of every candidate to its nearest chosen sample.
    d = np.min(np.linalg.norm(X[:, None, :] - X[None, chosen, :], axis=2), axis=1)
    d[chosen] = -np.inf
    while len(chosen) < k:
        nxt = int(np.argmax(d))  # ties: the nearer to the centroid (lower index)
        if not np.isfinite(d[nxt]):
            break
        chosen.append(nxt)
        d = np.minimum(d, np.linalg.norm(X - X[nxt], axis=1))
        d[chosen] = -np.inf
    return [ids[i] for i in chosen]
