"""Enrichment rows: one per document, labels and stable ids from the run's centroids."""
from __future__ import annotations

import polars as pl

from services.gateway.enrichment import COLUMNS, assignments, batches


def members(rows):
    return pl.DataFrame(rows, schema={"document_id": pl.String, "cluster_id": pl.String,
                                      "distance_to_centroid": pl.Float32}, orient="row")


RUN_A = {"run_id": "run_a", "centroids": [
    {"cluster_id": "cl_0", "label": "Cats", "stable_id": "sc_cats"},
    {"cluster_id": "cl_1", "label": "Dogs", "stable_id": "sc_dogs"},
    {"cluster_id": "cl_-1", "label": "Noise"},
]}
RUN_B = {"run_id": "run_b", "centroids": [{"cluster_id": "cl_0", "label": None, "stable_id": None}]}


def test_rows_carry_label_stable_id_distance_and_run():
    frame = assignments([(RUN_A, members([("d1", "cl_0", 0.5), ("d2", "cl_1", 0.25), ("d3", "cl_-1", None),
                                          ("d4", "cl_9", float("nan"))]))])
    assert frame.columns == COLUMNS
    assert frame.rows() == [
        ("d1", "cl_0", "Cats", 0.5, "sc_cats", "run_a"),
        ("d2", "cl_1", "Dogs", 0.25, "sc_dogs", "run_a"),
        ("d3", "cl_-1", "Noise", None, None, "run_a"),
        ("d4", "cl_9", None, None, None, "run_a"),  # unknown cluster: no label; NaN is null
    ]


def test_later_runs_win_and_each_document_appears_once():
    frame = assignments([(RUN_A, members([("d1", "cl_0", 0.5), ("d2", "cl_1", 0.25)])),
                         (RUN_B, members([("d2", "cl_0", 0.75), ("d2", "cl_0", 0.5)]))])
    assert frame.height == 2
    assert dict(zip(frame["document_id"], frame["run_id"])) == {"d1": "run_a", "d2": "run_b"}
    assert frame.filter(pl.col("document_id") == "d2")["distance"].to_list() == [0.5]


def test_batches_split_the_rows():
    frame = assignments([(RUN_A, members([(f"d{i}", "cl_0", 0.1) for i in range(5)]))])
    parts = list(batches(frame, 2))
    assert [len(p["document_id"]) for p in parts] == [2, 2, 1]
    assert parts[2]["document_id"] == ["d4"] and set(parts[0]) == set(COLUMNS)
    assert assignments([]).height == 0
