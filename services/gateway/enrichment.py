"""Enrichment: a run's cluster assignment written back onto the documents. No I/O here:
the route reads the runs' members, this module turns them into batches of rows, and the
repository merges each batch into the payloads.

Every enriched document gets these payload keys (overwritten by a later enrichment, so
running the same enrichment twice leaves the same payloads):

    cluster_id            "cl_3" ("cl_-1": noise)
    cluster_label         the cluster's label in the run, or null
    distance_to_centroid  euclidean distance to the cluster's centroid, null for noise
                          (composite runs: to the member's source cluster's centroid)
    cluster_stable_id     the cluster's stable id across full runs, or null
    cluster_run_id        the run the values come from

A document that is a member of several of the given runs (or several times of one
composite run) gets the values of the last run listed (its last row).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl

COLUMNS = ["document_id", "cluster_id", "cluster_label", "distance", "stable_id", "run_id"]


def assignments(runs: list[tuple[dict[str, Any], pl.DataFrame]]) -> pl.DataFrame:
    """One row per document: `runs` pairs an executions row (its centroids give the labels
    and stable ids) with its members frame (document_id, cluster_id, distance_to_centroid)."""
    frames = []
    for run, members in runs:
        centroids = run.get("centroids") or []
        labels = {c["cluster_id"]: c.get("label") for c in centroids}
        stable = {c["cluster_id"]: c.get("stable_id") for c in centroids}
        frames.append(members.select(
            pl.col("document_id").cast(pl.String),
            pl.col("cluster_id").cast(pl.String),
            pl.col("cluster_id").cast(pl.String)
            .replace_strict(labels, default=None, return_dtype=pl.String).alias("cluster_label"),
            pl.col("distance_to_centroid").cast(pl.Float64).fill_nan(None).alias("distance"),
            pl.col("cluster_id").cast(pl.String)
            .replace_strict(stable, default=None, return_dtype=pl.String).alias("stable_id"),
            pl.lit(run["run_id"], dtype=pl.String).alias("run_id"),
        ))
    if not frames:
        return pl.DataFrame(schema={c: pl.Float64 if c == "distance" else pl.String for c in COLUMNS})
    return pl.concat(frames).unique("document_id", keep="last", maintain_order=True)


def batches(frame: pl.DataFrame, size: int) -> Iterator[dict[str, list[Any]]]:
    """Column lists of `size` rows at a time, as the repository binds them."""
    for start in range(0, frame.height, size):
        part = frame.slice(start, size)
        yield {c: part[c].to_list() for c in COLUMNS}
