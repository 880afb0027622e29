"""The bulk import's file checks (clusterflow/imports.py): pure, no servers."""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from clusterflow.imports import (ImportFileError, check_batch, duplicated_rows, file_batches, looks_like_parquet,
                                 plan_columns)

DIM = 3


def table(**columns) -> pa.Table:
    return pa.table(columns)


def good_vectors(n: int) -> list[list[float]]:
    return [[float(i), 1.0, -1.0] for i in range(n)]


def test_plan_defaults_the_embedding_to_its_name_or_a_vector_column():
    t = table(document_id=["a"], text=[[1.0, 2.0, 3.0]], title=["x"], year=[2001])
    plan = plan_columns(t.schema, {"text": DIM})
    assert plan.embedding_columns == {"text": "text"} and plan.payload_columns == ["title", "year"]
    t = table(document_id=["a"], embedding=[[1.0, 2.0, 3.0]], title=["x"])
    assert plan_columns(t.schema, {"text": DIM}).embedding_columns == {"text": "embedding"}


@pytest.mark.parametrize("columns, kwargs, message", [
    ({"id": ["a"], "text": [[1.0, 2.0, 3.0]]}, {}, "no id column 'document_id'"),
    ({"document_id": [1.5], "text": [[1.0, 2.0, 3.0]]}, {}, "ids must be text or integers"),
    ({"document_id": ["a"], "other": [[1.0, 2.0, 3.0]]}, {}, "no column holds the collection's embeddings"),
    ({"document_id": ["a"], "text": ["not a vector"]}, {}, "vectors must be lists of floats"),
    ({"document_id": ["a"], "text": [[1.0, 2.0, 3.0]]}, {"embedding_columns": {"image": "text"}},
     "does not declare: ['image']"),
    ({"document_id": ["a"], "text": [[1.0, 2.0, 3.0]]}, {"payload_columns": ["nope"]}, "does not have: ['nope']"),
])
def test_plan_refuses_a_file_it_cannot_import(columns, kwargs, message):
    with pytest.raises(ImportFileError, match=re.escape(message)):
        plan_columns(table(**columns).schema, {"text": DIM}, **kwargs)


def test_plan_refuses_a_fixed_size_list_of_another_dimension():
    t = pa.table({"document_id": ["a"], "text": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2))})
    with pytest.raises(ImportFileError, match="holds 2 values a row, the collection declares 3"):
        plan_columns(t.schema, {"text": DIM})


def test_bad_rows_are_reported_by_row_number_and_the_rest_kept():
    ids = ["a", None, "c", "d", "c", "f", "g", ""]
    vecs = good_vectors(8)
    vecs[3] = [1.0, 2.0]           # wrong dimension
    vecs[5] = [1.0, float("nan"), 0.0]
    vecs[6] = None                 # missing
    t = table(document_id=ids, text=vecs, title=[f"t{i}" for i in range(8)])
    plan = plan_columns(t.schema, {"text": DIM})
    dup = duplicated_rows(t.column("document_id"))
    assert dup.tolist() == [2, 4]
    # The file checked in two batches: row numbers count from the file's first row.
    first = check_batch(t.slice(0, 4), plan, {"text": DIM}, 0, dup)
    second = check_batch(t.slice(4), plan, {"text": DIM}, 4, dup)
    assert first.ids == ["a"] and second.ids == []
    reasons = {b.row: b.reason for b in first.bad + second.bad}
    assert reasons == {1: "missing document id", 2: "duplicate document id in the file",
                       3: "embedding 'text': dimension 2, the collection declares 3",
                       4: "duplicate document id in the file",
                       5: "embedding 'text': vector holds NaN or infinity",
                       6: "embedding 'text': missing vector", 7: "missing document id"}
    assert np.array_equal(first.vectors["text"], np.array([[0.0, 1.0, -1.0]], dtype=np.float32))
    assert first.payloads == ['{"title":"t0"}']


def test_vectors_as_float32_bytes_and_integer_ids():
    X = np.arange(6, dtype="<f4").reshape(2, 3)
    t = pa.table({"document_id": [10, 11], "text": pa.array([X[0].tobytes(), X[1].tobytes()], pa.binary(12)),
                  "tag": ["x", "y"]})
    plan = plan_columns(t.schema, {"text": DIM})
    got = check_batch(t, plan, {"text": DIM}, 0, duplicated_rows(t.column("document_id")))
    assert got.ids == ["10", "11"] and not got.bad
    assert np.array_equal(got.vectors["text"], X)
    assert got.payloads == ['{"tag":"x"}', '{"tag":"y"}']


def test_parquet_magic():
    assert looks_like_parquet(b"PAR1....", b"....PAR1")
    assert not looks_like_parquet(b"PK\x03\x04", b"....PAR1")
    assert not looks_like_parquet(b"", b"")


def test_reading_a_file_batch_by_batch_holds_a_batch_not_the_file(tmp_path):
    """The import reads its file through file_batches: Arrow's memory stays near one
    batch's worth, whatever the file's size (pyarrow's default reader kept every
    column chunk it had pre-buffered: a 1M x 384 import held ~2 GB)."""
    import pyarrow.parquet as pq

    path, rows, dim = str(tmp_path / "docs.parquet"), 5_000, 384
    X = np.random.default_rng(0).random((rows, dim), dtype=np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), dim)
    with pq.ParquetWriter(path, pa.schema([("document_id", pa.string()), ("embedding", vectors.type)]),
                          compression="none") as writer:
        for g in range(16):  # 16 row groups, 123 MB of vectors
            writer.write_table(pa.table({"document_id": [f"d{g}-{i}" for i in range(rows)], "embedding": vectors}))
    pa.default_memory_pool().release_unused()
    before, peak, seen = pa.total_allocated_bytes(), 0, 0
    source, batches = file_batches(path, 2_500)
    for batch in batches:
        seen += batch.num_rows
        peak = max(peak, pa.total_allocated_bytes() - before)
    file_bytes = 16 * rows * dim * 4
    assert seen == 16 * rows and source.metadata.num_rows == seen
    assert peak < file_bytes / 4, f"{peak >> 20} MB held reading a {file_bytes >> 20} MB file"
