"""Benchmark: reading a run's dataset into the (n, d) float32 array the engine takes, by
the format of its `vector` column. One read per process, so that a whole-process timer
(`/usr/bin/time -v`, hyperfine) sees the wall time and the peak memory of each.

    .venv/bin/python bench/dataset_load.py --make /tmp/datasets --n 100000   # setup
    .venv/bin/python bench/dataset_load.py --read /tmp/datasets/fixed.parquet
    .venv/bin/python bench/dataset_load.py --read /tmp/datasets/list.parquet

"fixed" is what the preparer writes (`clusterflow/datasets.py`: fixed-width binary,
read by `read_dataset`); "list" is the same data as a parquet list of float32 (what
polars writes for `pl.Array(pl.Float32, d)`), read by polars and converted to numpy.
Each read prints its own seconds and the array's checksum (equal for both formats).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import polars as pl

from clusterflow.datasets import read_dataset, write_dataset

from common import make_data  # noqa: E402  (bench/ is the script directory)


def make(directory: str, n: int) -> None:
    os.makedirs(directory, exist_ok=True)
    X = make_data(n)
    ids = [f"doc_{i:07d}" for i in range(n)]
    write_dataset(os.path.join(directory, "fixed.parquet"), ids, X)
    pl.DataFrame({"document_id": ids, "vector": pl.Series(X, dtype=pl.Array(pl.Float32, X.shape[1]))}) \
        .write_parquet(os.path.join(directory, "list.parquet"), compression="zstd", statistics=False)


def read(path: str) -> np.ndarray:
    if os.path.basename(path).startswith("list"):
        frame = pl.read_parquet(path)
        return frame["vector"].to_numpy().astype(np.float32, copy=False)
    return read_dataset(path)[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--make", metavar="DIR")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--read", metavar="PATH")
    args = parser.parse_args()
    if args.make:
        make(args.make, args.n)
    if args.read:
        t0 = time.perf_counter()
        X = read(args.read)
        seconds = time.perf_counter() - t0
        print(f"{args.read}: {X.shape} in {seconds:.3f}s, checksum {float(X.sum(dtype=np.float64)):.6f}")
        print(json.dumps({"path": args.read, "rows": X.shape[0], "dim": X.shape[1], "seconds": round(seconds, 4)}))


if __name__ == "__main__":
    main()
