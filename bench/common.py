"""Data shared by the benchmarks: unit vectors around K random directions."""
from __future__ import annotations

import numpy as np

DIM = 384
K = 20


def make_data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, DIM))
    X = centers[rng.integers(0, K, size=n)] + rng.normal(scale=0.5, size=(n, DIM))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)
