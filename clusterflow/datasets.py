"""The dataset parquet of a run: written by the preparer, read by the clusterer, the
labeler and the gateway's on-demand layout.

Two columns: `document_id` (string) and `vector`, one FIXED_LEN_BYTE_ARRAY of 4·d
bytes per document, the little-endian float32 components (the field's metadata says
so: `clusterflow.vector=float32-le`, `clusterflow.dimension=d`).

Why bytes and not `list<float32>`: parquet stores a list with a repetition level per
component, and decoding 38M of them for 100K x 384 took 0.36 s (polars) to 0.65 s
(pyarrow), longer than the download; fixed-width bytes decode in 0.02-0.1 s and map
onto numpy without a copy. The vectors are stored uncompressed and without a
dictionary: embeddings gain 0-8 % from lz4 or zstd, and pyarrow's dictionary attempt
on 38M floats doubled the export time before it gave up.

`vectors_of` also reads list columns (the composite runs' centroid datasets, datasets
written before this format), so every reader goes through it.
"""
from __future__ import annotations

import mmap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VECTOR_ENCODING = b"float32-le"
# Written once, read once right away: speed matters more than size.
WRITE_OPTIONS = dict(compression={"document_id": "lz4", "vector": "none"}, use_dictionary=["document_id"],
                     write_statistics=False)
# Row groups of about 32 MB: what a reader holds beside the array it fills (and what
# assign mode holds at all), whatever the dimension.
ROW_GROUP_BYTES = 32 * 2**20


def dataset_schema(dimension: int) -> pa.Schema:
    vector = pa.field("vector", pa.binary(4 * dimension), nullable=False, metadata={
        b"clusterflow.vector": VECTOR_ENCODING, b"clusterflow.dimension": str(dimension).encode()})
    return pa.schema([pa.field("document_id", pa.string(), nullable=False), vector])


def rows_per_group(dimension: int) -> int:
    return max(1024, ROW_GROUP_BYTES // (4 * max(dimension, 1)))


def vector_array(X: np.ndarray) -> pa.FixedSizeBinaryArray:
    """(n, d) float32 -> the `vector` column (one copy, to little-endian C order)."""
    X = np.ascontiguousarray(X, dtype="<f4")
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * X.shape[1]), len(X), [None, pa.py_buffer(X)])


def dataset_table(document_ids: list[str] | pa.Array, X: np.ndarray) -> pa.Table:
    return pa.table([pa.array(document_ids, pa.string()), vector_array(X)], schema=dataset_schema(X.shape[1]))


def write_dataset(path: str, document_ids: list[str] | pa.Array, X: np.ndarray) -> None:
    table = dataset_table(document_ids, X)
    pq.write_table(table, path, row_group_size=rows_per_group(X.shape[1]), **WRITE_OPTIONS)


def vectors_of(column: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """A vector column as an (n, d) float32 array: fixed-width bytes without a copy
    (one chunk), list columns flattened."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    n = len(column)
    if n and (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
              or pa.types.is_binary_view(column.type)):
        # polars has no fixed-width binary: what it read comes back variable-width.
        width = 4 * dim if dim else len(column[0].as_py())
        try:
            column = column.cast(pa.binary(width))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"the dataset's vectors are not all {width} bytes long") from exc
    if pa.types.is_fixed_size_binary(column.type):
        width = column.type.byte_width
        if column.null_count:
            raise ValueError("the dataset has documents without a vector")
        data = column.buffers()[1]
        flat = np.frombuffer(data, dtype="<f4", count=n * width // 4, offset=column.offset * width)
        return flat.reshape(n, width // 4)
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(n, -1)


def plain_pages(shape: tuple[int, int]) -> np.ndarray:
    """An uninitialised float32 array in memory of its own (an anonymous mapping, freed
    with the array). numpy asks the kernel for transparent huge pages for large arrays,
    and where the kernel compacts memory on demand for them (THP `defrag=madvise`, the
    common default) first touching 146 MB took 0.3-0.45 s instead of 0.1 s; the
    dataset is written once and read sequentially, which huge pages do not speed up."""
    nbytes = max(shape[0] * shape[1] * 4, 1)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32, count=shape[0] * shape[1]).reshape(shape)


def read_dataset(path: str) -> tuple[pa.ChunkedArray, np.ndarray]:
    """The document ids and the (n, d) float32 vectors of a dataset file.

    Row group by row group into one preallocated array: memory holds the vectors once,
    plus one row group (ROW_GROUP_BYTES), never the decoded table beside its copy."""
    source = pq.ParquetFile(path)
    n = source.metadata.num_rows
    ids, X, at = [], None, 0
    for group in range(source.num_row_groups):
        table = source.read_row_group(group, use_threads=False)
        part = vectors_of(table.column("vector"))
        if X is None:
            X = plain_pages((n, part.shape[1]))
        X[at:at + len(part)] = part
        at += len(part)
        ids.extend(table.column("document_id").chunks)
        del table, part
    if X is None:
        X = np.zeros((0, 0), dtype=np.float32)
    # Arrow's allocator keeps what the row groups used (about 100 MB at 384-d) unless told.
    pa.default_memory_pool().release_unused()
    return pa.chunked_array(ids, pa.string()), X
