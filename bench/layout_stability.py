"""Benchmark: what layout_stability "align" adds to a layout, at the sizes the engine
lays out (up to 1M points), beside the bare library call.

    .venv/bin/python bench/layout_stability.py --sizes 100000 1000000

A previous layout of n documents and a new one of the same documents in another order
(10% replaced by new ones), turned, mirrored, scaled and shifted. "align" is
`engine.layout.align_to_previous` (join by document id, fit, apply to every point);
"bare" is scipy's `orthogonal_procrustes` on rows already paired, plus the same apply:
the difference is the join by id. Both must put the shared documents back (the
residual is printed). For scale: a 1M-point layout takes ~3 min (README).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from scipy.linalg import orthogonal_procrustes

from services.clusterer.engine.layout import align_to_previous

from common import last_line  # noqa: E402  (bench/ is the script directory)


def case(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    previous = rng.normal(size=(n, 2)).astype(np.float32)
    ids = np.array([f"doc_{i:08d}" for i in range(n)], dtype=object)
    keep = rng.permutation(n)[: int(n * 0.9)]
    turn = np.array([[0.6, -0.8], [0.8, 0.6]]) @ np.diag([1, -1])
    moved = previous[keep] @ turn * 3 + [5, -2]
    coords = np.concatenate([moved, rng.normal(size=(n - len(keep), 2))]).astype(np.float32)
    new_ids = np.concatenate([ids[keep], np.array([f"new_{i:08d}" for i in range(n - len(keep))], dtype=object)])
    # polars Series of ids, as the clusterer holds them (the coords parquet's column)
    return coords, pl.Series(new_ids, dtype=pl.String), previous, pl.Series(ids, dtype=pl.String), keep


def bare(coords, previous, keep):
    """scipy on the shared rows, already paired (the join is not timed: it is given)."""
    A, B = coords[: len(keep)].astype(np.float64), previous[keep].astype(np.float64)
    ma, mb = A.mean(axis=0), B.mean(axis=0)
    R, s = orthogonal_procrustes(A - ma, B - mb)
    scale = s / ((A - ma) ** 2).sum()
    return ((coords - ma) * scale @ R + mb).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    figures = {}
    for n in args.sizes:
        coords, new_ids, previous, ids, keep = case(n)
        started = time.perf_counter()
        aligned, applied, reason = align_to_previous(coords, new_ids, previous, ids)
        align_s = time.perf_counter() - started
        started = time.perf_counter()
        reference = bare(coords, previous, keep)
        bare_s = time.perf_counter() - started
        residual = float(np.abs(aligned[: len(keep)] - previous[keep]).max())
        assert applied and residual < 1e-3 and np.allclose(aligned, reference, atol=1e-3), reason
        print(f"n={n:>9,}: align {align_s:6.2f} s (join by id + fit + apply), bare scipy {bare_s:6.3f} s; "
              f"residual {residual:.1e}; {reason}")
        figures[str(n)] = {"align_s": round(align_s, 3), "bare_s": round(bare_s, 4), "residual": residual}
    last_line({"bench": "layout_stability", "sizes": figures})


if __name__ == "__main__":
    main()
