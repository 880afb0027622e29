"""A collection's vectors as immutable segments in S3, and run manifests over them.

Segments. Each is one parquet file in the dataset format (`clusterflow/datasets.py`:
`document_id` plus the vector as 4·d fixed-width bytes), at a key that is never reused
(`segment_key`), so anything read from it can be cached by its key forever. Postgres
says which row of which segment holds each document's live vector
(`document_vectors.segment_id/segment_row`); the preparer seals the tail (vectors not
yet in a segment) and compacts segments that are mostly dead
(`services/preparer/segments.py`, which says why it is built that way).

Manifests. A run's dataset is not a copy of its vectors: it is a manifest, the list
of segments the run reads and, for each of its documents, the segment and the row.
It also records the selection that produced it (filters, sample, dimension checked).
The manifest is small (8 bytes a document) and lives at the run's `manifest` key.

The reader. `RunVectors` is the one way to read a run's vectors: the clusterer (full,
assign, composite), the labeler and the visualization's layout all go through it. It
fetches the segments it lacks into a local `SegmentCache` (in parallel, bounded in
size, least recently used out first) and assembles the run's matrix from the cached
copies. A segment that is missing or corrupt raises `SegmentUnavailable`, naming it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client import Counter

from clusterflow.datasets import plain_pages, vectors_of

log = logging.getLogger("clusterflow.segments")

MANIFEST_FORMAT = "clusterflow.manifest/1"
_MANIFEST_META = b"clusterflow.manifest"
MANIFEST_SCHEMA = pa.schema([("segment", pa.int32()), ("row", pa.int32())])

CACHE_EVENTS = Counter("clusterflow_segment_cache", "Segment cache lookups, by outcome (hit, miss)",
                       ["outcome"])
CACHE_BYTES = Counter("clusterflow_segment_cache_downloaded_bytes",
                      "Bytes of segments downloaded from S3 into the local cache")


def segment_key(namespace: str, collection_id: str, embedding_name: str, token: str) -> str:
    """A new segment's object key. `token` is unique per segment: keys are never reused,
    which is what lets readers cache by key."""
    return f"{namespace}/segments/{collection_id}/{embedding_name}/{token}.parquet"


class SegmentUnavailable(RuntimeError):
    """A segment a manifest names cannot be read (gone from S3, or not what it should be)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"segment {key} cannot be read: {reason}")
        self.key = key
        self.reason = reason


# ------------------------------------------------------------------------- manifests

@dataclass(frozen=True)
class SegmentRef:
    segment_id: int
    key: str
    num_rows: int  # rows in the segment file (live or not)


@dataclass
class Manifest:
    """Which rows of which segments a run reads. Rows are grouped by segment, in the
    segments' order, ascending within each: a reader scans every file once, forwards."""

    dimension: int
    segments: list[SegmentRef]
    segment: np.ndarray  # int32 per document: index into `segments`
    row: np.ndarray  # int32 per document: row within that segment
    selection: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.segment = np.asarray(self.segment, dtype=np.int32)
        self.row = np.asarray(self.row, dtype=np.int32)
        if self.segment.shape != self.row.shape:
            raise ValueError("a manifest needs one segment and one row per document")

    @classmethod
    def build(cls, dimension: int, segments: list[SegmentRef], segment_ids: np.ndarray, rows: np.ndarray,
              selection: dict[str, Any] | None = None) -> "Manifest":
        """From (segment id, row) pairs in any order: the segments named are kept (in id
        order) and the pairs sorted for forward scans."""
        by_id = {s.segment_id: s for s in segments}
        used = sorted(set(np.unique(segment_ids).tolist()))
        missing = [s for s in used if s not in by_id]
        if missing:
            raise ValueError(f"the selection names segments {missing[:5]} that are not registered")
        refs = [by_id[s] for s in used]
        index = np.searchsorted(np.asarray(used, dtype=np.int64), np.asarray(segment_ids, dtype=np.int64))
        order = np.lexsort((rows, index))
        return cls(dimension=dimension, segments=refs, segment=index[order], row=np.asarray(rows)[order],
                   selection=selection or {})

    def __len__(self) -> int:
        return len(self.row)

    def parts(self) -> Iterator[tuple[SegmentRef, np.ndarray]]:
        """(segment, its rows) for each segment, in order."""
        bounds = np.searchsorted(self.segment, np.arange(len(self.segments) + 1))
        for i, ref in enumerate(self.segments):
            yield ref, self.row[bounds[i]:bounds[i + 1]]

    def to_table(self) -> pa.Table:
        meta = {"format": MANIFEST_FORMAT, "dimension": self.dimension, "selection": self.selection,
                "segments": [{"segment_id": s.segment_id, "key": s.key, "num_rows": s.num_rows}
                             for s in self.segments]}
        table = pa.table([pa.array(self.segment, pa.int32()), pa.array(self.row, pa.int32())],
                         schema=MANIFEST_SCHEMA)
        return table.replace_schema_metadata({_MANIFEST_META: json.dumps(meta).encode()})

    def write(self, path: str) -> None:
        pq.write_table(self.to_table(), path, compression="zstd")

    @classmethod
    def read(cls, path: str) -> "Manifest":
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(_MANIFEST_META)
        if raw is None:
            raise ValueError(f"{path} is not a run manifest (no {_MANIFEST_META.decode()} metadata)")
        meta = json.loads(raw)
        if meta.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {meta.get('format')!r}")
        return cls(dimension=int(meta["dimension"]),
                   segments=[SegmentRef(int(s["segment_id"]), s["key"], int(s["num_rows"])) for s in meta["segments"]],
                   segment=table.column("segment").to_numpy(), row=table.column("row").to_numpy(),
                   selection=meta.get("selection") or {})


# ----------------------------------------------------------------------------- cache

class SegmentSource(Protocol):
    """Where segments come from (the object store port's `download`)."""

    def download(self, key: str, path: str) -> None: ...


@dataclass
class CachedSegment:
    key: str
    ids: pa.StringArray
    vectors: np.ndarray  # (num_rows, d) float32, memory-mapped from the cache file


class SegmentCache:
    """Segments on local disk, keyed by their (immutable) object key, at most `max_bytes`
    of them: the least recently used go first. Each is kept decoded, as the raw float32
    matrix (`<h>.f32`) and its ids (`<h>.ids`, Arrow IPC), so reading a cached segment is
    a plain file read, with no parquet decode.

    `hits`, `misses` and `downloaded_bytes` count what this process did (and go to
    Prometheus as `clusterflow_segment_cache*`)."""

    def __init__(self, source: SegmentSource, directory: str | os.PathLike, max_bytes: int,
                 parallel: int = 4) -> None:
        self.source = source
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.parallel = max(1, parallel)
        self.hits = 0
        self.misses = 0
        self.downloaded_bytes = 0
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Event] = {}

    def _stem(self, key: str) -> Path:
        return self.directory / hashlib.sha256(key.encode()).hexdigest()[:32]

    def has(self, key: str) -> bool:
        stem = self._stem(key)
        return stem.with_suffix(".f32").exists() and stem.with_suffix(".ids").exists()

    def ensure(self, refs: Iterable[SegmentRef], dimension: int) -> None:
        """Every segment of `refs` in the cache: the missing ones fetched in parallel."""
        missing = []
        for ref in dict.fromkeys(refs):
            if self.has(ref.key):
                self._touch(ref.key)
                self._count("hit")
            else:
                missing.append(ref)
        if missing:
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(missing)),
                                    thread_name_prefix="segment-fetch") as pool:
                list(pool.map(lambda r: self._fetch(r, dimension), missing))
        self._evict(keep={r.key for r in refs})

    def open(self, ref: SegmentRef, dimension: int) -> CachedSegment:
        """A cached segment (fetched first when absent; fetched again once when its
        cached copy turns out damaged)."""
        try:
            return self._open(ref, dimension)
        except SegmentUnavailable:
            return self._open(ref, dimension)

    def _open(self, ref: SegmentRef, dimension: int) -> CachedSegment:
        if not self.has(ref.key):
            self.ensure([ref], dimension)
        stem = self._stem(ref.key)
        try:
            with pa.memory_map(str(stem.with_suffix(".ids"))) as source:
                ids = pa.ipc.open_file(source).read_all().column(0).combine_chunks()
            size = os.path.getsize(stem.with_suffix(".f32"))
            if size != ref.num_rows * dimension * 4 or len(ids) != ref.num_rows:
                raise ValueError(f"{len(ids)} ids and {size} bytes of vectors")
            vectors = (np.memmap(stem.with_suffix(".f32"), dtype="<f4", mode="r", shape=(ref.num_rows, dimension))
                       if ref.num_rows else np.zeros((0, dimension), dtype=np.float32))
        except (OSError, ValueError, pa.ArrowException) as exc:
            self._drop(ref.key)
            raise SegmentUnavailable(ref.key, f"its cached copy is damaged ({exc})") from exc
        return CachedSegment(ref.key, ids, vectors)

    def read_rows_into(self, ref: SegmentRef, dimension: int, rows: np.ndarray, out: np.ndarray) -> pa.Array:
        """The segment's `rows` (ascending) copied into `out` (len(rows), d); returns their ids.
        All rows in order is one sequential file read, with no page faults on a mapping."""
        segment = self.open(ref, dimension)
        stem = self._stem(ref.key)
        if len(rows) == ref.num_rows and (len(rows) == 0 or (rows[0] == 0 and rows[-1] == len(rows) - 1)):
            with open(stem.with_suffix(".f32"), "rb", buffering=0) as f:
                view = memoryview(out).cast("B")
                got = 0
                while got < len(view):
                    n = f.readinto(view[got:])
                    if not n:
                        raise SegmentUnavailable(ref.key, "its cached copy is shorter than it should be")
                    got += n
            return segment.ids
        out[:] = segment.vectors[rows]
        return segment.ids.take(pa.array(rows))

    # -- internals

    def _count(self, outcome: str) -> None:
        with self._lock:
            if outcome == "hit":
                self.hits += 1
            else:
                self.misses += 1
        CACHE_EVENTS.labels(outcome=outcome).inc()

    def _touch(self, key: str) -> None:
        try:
            os.utime(self._stem(key).with_suffix(".f32"))
        except FileNotFoundError:
            pass

    def _fetch(self, ref: SegmentRef, dimension: int) -> None:
        with self._lock:
            waiting = self._fetching.get(ref.key)
            if waiting is None:
                self._fetching[ref.key] = threading.Event()
        if waiting is not None:  # another thread fetches it: wait for that one
            waiting.wait()
            if not self.has(ref.key):
                raise SegmentUnavailable(ref.key, "it could not be fetched")
            return
        try:
            self._count("miss")
            stem = self._stem(ref.key)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".download")
            os.close(fd)
            try:
                try:
                    self.source.download(ref.key, tmp)
                except Exception as exc:  # noqa: BLE001 - the store's errors vary by adapter
                    if _is_not_found(exc):
                        raise SegmentUnavailable(ref.key, "it is missing from the object store") from exc
                    raise
                size = os.path.getsize(tmp)
                with self._lock:
                    self.downloaded_bytes += size
                CACHE_BYTES.inc(size)
                _decode_into_cache(ref, dimension, tmp, stem)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        finally:
            with self._lock:
                self._fetching.pop(ref.key).set()

    def _drop(self, key: str) -> None:
        for suffix in (".f32", ".ids"):
            try:
                self._stem(key).with_suffix(suffix).unlink()
            except FileNotFoundError:
                pass

    def _evict(self, keep: set[str]) -> None:
        """Least recently used first, until the cache fits `max_bytes` (what `keep` names
        stays: the run being read needs it, whatever the bound)."""
        keep_stems = {self._stem(k).name for k in keep}
        entries = []
        for f32 in self.directory.glob("*.f32"):
            try:
                stat = f32.stat()
            except FileNotFoundError:
                continue
            ids = f32.with_suffix(".ids")
            size = stat.st_size + (ids.stat().st_size if ids.exists() else 0)
            entries.append((stat.st_mtime, f32.stem, size))
        total = sum(size for _, _, size in entries)
        for _, stem, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if stem in keep_stems:
                continue
            for suffix in (".f32", ".ids"):
                try:
                    (self.directory / stem).with_suffix(suffix).unlink()
                except FileNotFoundError:
                    pass
            total -= size


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    return code in ("NoSuchKey", "NoSuchObject", "NotFound") or isinstance(exc, FileNotFoundError)


def _decode_into_cache(ref: SegmentRef, dimension: int, parquet_path: str, stem: Path) -> None:
    """A downloaded segment file -> `<stem>.f32` + `<stem>.ids`, checked against what the
    manifest says of it; written under temporary names and renamed, so a reader never
    sees half an entry. The temporary names are this process's and thread's own: the
    cache directory may be shared by processes on one host (two Ray nodes on one
    machine), and two of them decoding one segment must not rename each other's files."""
    tag = f"{os.getpid()}.{threading.get_ident()}"
    f32_tmp, ids_tmp = stem.parent / f"{stem.name}.f32.{tag}.tmp", stem.parent / f"{stem.name}.ids.{tag}.tmp"
    try:
        source = pq.ParquetFile(parquet_path)
        if source.metadata.num_rows != ref.num_rows:
            raise ValueError(f"it has {source.metadata.num_rows} rows, the manifest says {ref.num_rows}")
        ids = []
        with open(f32_tmp, "wb") as out:
            for group in range(source.num_row_groups):
                table = source.read_row_group(group, columns=["document_id", "vector"], use_threads=False)
                X = vectors_of(table.column("vector"), dimension)
                if X.shape[1] != dimension:
                    raise ValueError(f"its vectors have {X.shape[1]} dimensions, not {dimension}")
                out.write(np.ascontiguousarray(X, dtype="<f4").data)
                ids.extend(table.column("document_id").cast(pa.string()).chunks)
        column = pa.chunked_array(ids, pa.string()).combine_chunks() if ids else pa.array([], pa.string())
        with pa.OSFile(str(ids_tmp), "wb") as sink:
            with pa.ipc.new_file(sink, pa.schema([("document_id", pa.string())])) as writer:
                writer.write_table(pa.table([column], names=["document_id"]))
        os.replace(ids_tmp, stem.with_suffix(".ids"))
        os.replace(f32_tmp, stem.with_suffix(".f32"))
        del source, ids, column
        # Arrow's allocator keeps what the row groups used unless told (datasets.read_dataset).
        pa.default_memory_pool().release_unused()
    except (OSError, ValueError, pa.ArrowException) as exc:
        for path in (f32_tmp, ids_tmp):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        raise SegmentUnavailable(ref.key, f"it is corrupt or not a segment ({exc})") from exc


# ---------------------------------------------------------------------------- reader

class RunVectors:
    """A run's vectors, read through its manifest and the segment cache."""

    def __init__(self, manifest: Manifest, cache: SegmentCache) -> None:
        self.manifest = manifest
        self.cache = cache

    def load(self) -> tuple[pa.ChunkedArray, np.ndarray]:
        """The run's document ids and its (n, d) float32 matrix, in manifest order; memory
        holds the matrix once."""
        m = self.manifest
        started = time.perf_counter()
        self.cache.ensure(m.segments, m.dimension)
        X = plain_pages((len(m), m.dimension))
        ids, at = [], 0
        for ref, rows in m.parts():
            ids.append(self.cache.read_rows_into(ref, m.dimension, rows, X[at:at + len(rows)]))
            at += len(rows)
        log.debug("read %d vectors from %d segments in %.2f s", len(m), len(m.segments),
                  time.perf_counter() - started)
        return pa.chunked_array(ids, pa.string()), X

    def blocks(self, block_rows: int = 65_536) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """The run's (ids, vectors) a block at a time: memory holds one block."""
        m = self.manifest
        self.cache.ensure(m.segments, m.dimension)
        for ref, rows in m.parts():
            for start in range(0, len(rows), block_rows):
                part = rows[start:start + block_rows]
                X = np.empty((len(part), m.dimension), dtype=np.float32)
                ids = self.cache.read_rows_into(ref, m.dimension, part, X)
                yield ids, X

    def vectors_for(self, document_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The vectors of some of the run's documents, by id (the labeler's few)."""
        wanted = pa.array(sorted(set(document_ids)), pa.string())
        if len(wanted) == 0:
            return {}
        found: dict[str, np.ndarray] = {}
        m = self.manifest
        self.cache.ensure(m.segments, m.dimension)
        for ref, rows in m.parts():
            segment = self.cache.open(ref, m.dimension)
            ids = segment.ids.take(pa.array(rows))
            hit = np.flatnonzero(pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False))
            for i in hit:
                found[ids[int(i)].as_py()] = np.array(segment.vectors[rows[i]])
        return found


class SegmentLedger(Protocol):
    """Where a reader reports a segment it found missing or corrupt."""

    async def mark_lost(self, key: str, reason: str) -> None: ...


class PostgresSegmentLedger:
    """Marks a segment `lost` in the segments table; the preparer owns the table and acts
    on the mark at the next run over its collection: it seals the rows again from
    Postgres, where every live vector's bytes are kept."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def mark_lost(self, key: str, reason: str) -> None:
        from clusterflow.db.schema import segments

        async with self.engine.begin() as conn:
            await conn.execute(segments.update().where(segments.c.object_key == key, segments.c.state == "active")
                               .values(state="lost"))
        log.warning("segment %s marked lost: %s", key, reason)


class ManifestStore(Protocol):
    def download(self, key: str, path: str) -> None: ...


def load_manifest(store: ManifestStore, key: str) -> Manifest:
    """A run's manifest from the object store."""
    with tempfile.TemporaryDirectory(prefix="manifest-") as tmp:
        path = os.path.join(tmp, "manifest.parquet")
        store.download(key, path)
        return Manifest.read(path)


def cache_from_settings(settings: Any, service: str, source: SegmentSource) -> SegmentCache:
    """The service's segment cache, as `CLUSTERFLOW_SEGMENT_CACHE_*` configure it."""
    directory = os.path.join(settings.segment_cache_dir, service) if settings.segment_cache_dir \
        else os.path.join(tempfile.gettempdir(), f"clusterflow-segments-{service}-{os.getuid()}")
    return SegmentCache(source, directory, settings.segment_cache_bytes, parallel=settings.segment_fetch_parallel)
