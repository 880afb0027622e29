"""A run's vectors put straight into S3 as segments plus a manifest over them (what the
preparer produces), for engine tests and benchmarks that need no Postgres documents."""
from __future__ import annotations

import os
import tempfile
import uuid

import numpy as np

from clusterflow.datasets import write_dataset
from clusterflow.segments import Manifest, SegmentRef, segment_key
from clusterflow.storage import artifact_key


def put_run(store, namespace: str, cluster_id: str, run_id: str, ids: list[str], X: np.ndarray,
            rows_per_segment: int = 50_000, skip_every: int = 0) -> str:
    """Segments of `rows_per_segment` rows and the run's manifest; returns its key.
    With `skip_every` the manifest leaves out every n-th row of each segment (a run
    that reads some rows of its segments, as filters and samples make it)."""
    refs, seg_index, rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="segments-") as tmp:
        for s, start in enumerate(range(0, len(X), rows_per_segment)):
            part = slice(start, start + rows_per_segment)
            path = os.path.join(tmp, f"{s}.parquet")
            write_dataset(path, ids[part], np.ascontiguousarray(X[part], dtype=np.float32))
            key = segment_key(namespace, cluster_id, "text", uuid.uuid4().hex)
            store.upload(key, path)
            n = len(ids[part])
            refs.append(SegmentRef(segment_id=s + 1, key=key, num_rows=n))
            keep = np.arange(n) if not skip_every else np.flatnonzero(np.arange(n) % skip_every != 0)
            seg_index.append(np.full(len(keep), s + 1))
            rows.append(keep)
        manifest = Manifest.build(X.shape[1], refs, np.concatenate(seg_index), np.concatenate(rows))
        path = os.path.join(tmp, "manifest.parquet")
        manifest.write(path)
        key = artifact_key(namespace, cluster_id, run_id, "manifest")
        store.upload(key, path)
    return key
