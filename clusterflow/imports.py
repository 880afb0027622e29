"""Bulk import of documents from a parquet file: what the file must look like, and the
row checks. Pure (arrays in, arrays out); the gateway checks an uploaded file's shape
with it before queuing the import, the preparer checks every row while importing.

The file: one row per document; an id column (text or integer); one column per
embedding, each a list of floats (list, large_list or fixed_size_list of float32 or
float64) or the dataset format's 4·d little-endian float32 bytes; any other columns go
into the payload (or the ones named). A row is refused, and reported by its 0-based row
number, when its id is missing, its id appears twice in the file, or a vector is
missing, of the wrong dimension, or not finite. The other rows are imported.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PARQUET_MAGIC = b"PAR1"
# For a collection with one embedding, these columns hold it when no column has its name.
DEFAULT_VECTOR_COLUMNS = ("embedding", "vector")
MAX_REPORTED_BAD_ROWS = 1000


class ImportFileError(ValueError):
    """The file cannot be imported at all (not parquet, a column missing or of a type
    that cannot hold ids or vectors). The message says what to change."""


def looks_like_parquet(head: bytes, tail: bytes) -> bool:
    """A parquet file starts and ends with PAR1."""
    return head[:4] == PARQUET_MAGIC and tail[-4:] == PARQUET_MAGIC


@dataclass(frozen=True)
class ColumnPlan:
    id_column: str
    embedding_columns: dict[str, str]  # embedding name -> column
    payload_columns: list[str]


def plan_columns(schema: pa.Schema, embeddings: dict[str, int], *, id_column: str = "document_id",
                 embedding_columns: dict[str, str] | None = None,
                 payload_columns: list[str] | None = None) -> ColumnPlan:
    """Which column is what, checked against the file's schema and the collection's
    declared embeddings."""
    names = schema.names
    if id_column not in names:
        raise ImportFileError(f"the file has no id column {id_column!r} (its columns: {names[:20]}); "
                              "name it with id_column")
    id_type = schema.field(id_column).type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type) or pa.types.is_string_view(id_type)
            or pa.types.is_integer(id_type)):
        raise ImportFileError(f"the id column {id_column!r} is {id_type}; ids must be text or integers")
    if embedding_columns is None:
        embedding_columns = {}
        for name in embeddings:
            if name in names:
                embedding_columns[name] = name
            elif len(embeddings) == 1:
                found = [c for c in DEFAULT_VECTOR_COLUMNS if c in names]
                if found:
                    embedding_columns[name] = found[0]
        if not embedding_columns:
            raise ImportFileError(f"no column holds the collection's embeddings {sorted(embeddings)}: name a column "
                                  f"after each, or map them with embedding_columns (the file's columns: {names[:20]})")
    unknown = sorted(set(embedding_columns) - set(embeddings))
    if unknown:
        raise ImportFileError(f"embedding_columns names embeddings the collection does not declare: {unknown} "
                              f"(it declares {sorted(embeddings)})")
    for name, column in embedding_columns.items():
        if column not in names:
            raise ImportFileError(f"embedding {name!r}: the file has no column {column!r}")
        _check_vector_type(name, column, schema.field(column).type, embeddings[name])
    used = {id_column, *embedding_columns.values()}
    if payload_columns is None:
        payload_columns = [n for n in names if n not in used and not _is_binary(schema.field(n).type)]
    else:
        missing = [c for c in payload_columns if c not in names]
        if missing:
            raise ImportFileError(f"payload_columns names columns the file does not have: {missing}")
        clash = sorted(set(payload_columns) & used)
        if clash:
            raise ImportFileError(f"payload_columns may not include the id or embedding columns: {clash}")
    return ColumnPlan(id_column, dict(embedding_columns), list(payload_columns))


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _check_vector_type(name: str, column: str, t: pa.DataType, dim: int) -> None:
    if pa.types.is_fixed_size_binary(t):
        if t.byte_width != 4 * dim:
            raise ImportFileError(f"embedding {name!r}: column {column!r} holds {t.byte_width} bytes a row, "
                                  f"not the {4 * dim} of {dim} float32 values")
        return
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return  # checked row by row
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = t.value_type
        if not pa.types.is_floating(inner) and not pa.types.is_integer(inner):
            raise ImportFileError(f"embedding {name!r}: column {column!r} is a list of {inner}, not of numbers")
        if pa.types.is_fixed_size_list(t) and t.list_size != dim:
            raise ImportFileError(f"embedding {name!r}: column {column!r} holds {t.list_size} values a row, "
                                  f"the collection declares {dim}")
        return
    raise ImportFileError(f"embedding {name!r}: column {column!r} is {t}; vectors must be lists of floats "
                          "or 4·d bytes of float32")


@dataclass
class BadRow:
    row: int
    document_id: str | None
    reason: str


@dataclass
class CheckedBatch:
    """The good rows of one batch: ids, payloads as JSON text, one (n, d) float32 matrix
    per embedding; and the bad rows, by row number in the file."""

    ids: list[str]
    payloads: list[str]
    vectors: dict[str, np.ndarray]
    bad: list[BadRow] = field(default_factory=list)


def file_batches(path: str, batch_rows: int) -> tuple[pq.ParquetFile, Iterator[pa.RecordBatch]]:
    """The file, and its rows `batch_rows` at a time. Without pre-buffering: pyarrow's
    default reader keeps every column chunk it pre-buffered until the file is closed,
    so memory grew with the file (a 1M x 384 import held ~2 GB), not with the batch."""
    source = pq.ParquetFile(path, pre_buffer=False)
    return source, source.iter_batches(batch_size=batch_rows)


def duplicated_rows(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Row numbers whose id appears more than once in the file (every occurrence: which
    one is right cannot be told)."""
    series = pl.Series("id", ids.cast(pa.string()) if not pa.types.is_string(ids.type) else ids)
    return np.flatnonzero(series.is_duplicated().to_numpy() & series.is_not_null().to_numpy())


def check_batch(batch: pa.RecordBatch | pa.Table, plan: ColumnPlan, embeddings: dict[str, int], first_row: int,
                duplicated: np.ndarray) -> CheckedBatch:
    """Check one batch of the file (`first_row`: its first row's number in the file;
    `duplicated`: `duplicated_rows` of the whole file, sorted)."""
    n = batch.num_rows
    rows = np.arange(first_row, first_row + n)
    ids_raw = batch.column(plan.id_column)
    ids = pc.cast(ids_raw, pa.string()) if not pa.types.is_string(ids_raw.type) else ids_raw
    ids_list = ids.to_pylist()
    reasons: list[str | None] = [None] * n

    def refuse(mask: np.ndarray, reason: str) -> None:
        for i in np.flatnonzero(mask):
            if reasons[i] is None:
                reasons[i] = reason

    refuse(np.asarray(pc.is_null(ids).to_numpy(zero_copy_only=False)) |
           np.asarray([i == "" for i in ids_list]), "missing document id")
    refuse(np.asarray([len(i.encode()) > 256 if i else False for i in ids_list]), "document id longer than 256 bytes")
    refuse(np.isin(rows, duplicated), "duplicate document id in the file")
    matrices: dict[str, np.ndarray] = {}
    for name, column in plan.embedding_columns.items():
        X, problems = _vectors(batch.column(column), embeddings[name])
        for reason in dict.fromkeys(p for p in problems if p is not None):
            refuse(np.asarray([p == reason for p in problems]), f"embedding {name!r}: {reason}")
        matrices[name] = X
    good = np.asarray([r is None for r in reasons])
    payloads = _payloads(batch, plan.payload_columns, good)
    bad = [BadRow(int(rows[i]), ids_list[i], reasons[i]) for i in np.flatnonzero(~good)]
    return CheckedBatch(ids=[ids_list[i] for i in np.flatnonzero(good)], payloads=payloads,
                        vectors={k: np.ascontiguousarray(X[good]) for k, X in matrices.items()}, bad=bad)


def _vectors(column: pa.Array | pa.ChunkedArray, dim: int) -> tuple[np.ndarray, list[str | None]]:
    """(n, dim) float32 (zeros where a row is bad) and each row's problem or None."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    X = np.zeros((n, dim), dtype=np.float32)
    problems: list[str | None] = [None] * n
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
    t = column.type
    if pa.types.is_fixed_size_binary(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        for i, value in enumerate(column.to_pylist()):
            if value is None:
                continue
            if len(value) != 4 * dim:
                problems[i] = f"{len(value)} bytes, not the {4 * dim} of {dim} float32 values"
                valid[i] = False
            else:
                X[i] = np.frombuffer(value, dtype="<f4")
    else:
        if pa.types.is_fixed_size_list(t):
            lengths = np.where(valid, t.list_size, 0)
        else:
            lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False))
        wrong = valid & (lengths != dim)
        for i in np.flatnonzero(wrong):
            problems[i] = f"dimension {int(lengths[i])}, the collection declares {dim}"
        ok = valid & ~wrong
        if ok.any():
            picked = column.filter(pa.array(ok))
            flat = pc.list_flatten(picked).to_numpy(zero_copy_only=False)
            if np.issubdtype(flat.dtype, np.object_):  # nulls inside a vector
                flat = np.asarray([np.nan if v is None else v for v in flat], dtype=np.float64)
            X[ok] = np.asarray(flat, dtype=np.float32).reshape(-1, dim)
        valid = ok
    for i in np.flatnonzero(~valid):
        if problems[i] is None:
            problems[i] = "missing vector"
    finite = np.isfinite(X).all(axis=1)
    for i in np.flatnonzero(valid & ~finite):
        problems[i] = "vector holds NaN or infinity"
    return X, problems


def _payloads(batch: pa.RecordBatch | pa.Table, columns: list[str], good: np.ndarray) -> list[str]:
    """Each good row's payload as compact JSON text (polars writes it: no Python object
    per value)."""
    count = int(good.sum())
    if not columns:
        return ["{}"] * count
    frame = pl.from_arrow(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                          ).select(columns).filter(pl.Series(good))
    return frame.select(pl.struct(pl.all()).struct.json_encode().alias("payload"))["payload"].to_list()
