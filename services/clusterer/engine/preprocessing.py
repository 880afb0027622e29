"""``preprocessing_steps``: transforms applied to the vectors before clustering, in order
(arrays in, arrays out).

The steps are the hosted SDK's (``contracts.engine_params.validate_preprocessing``):
  whitening  centre, rotate onto the principal directions, divide each by the square root
             of its variance (floored at ``regularization``): the directions that carry
             most of the variance no longer dominate the distances;
  umap       UMAP to ``n_components`` (default 50, cosine, 30 neighbours, min_dist 0),
             the usual pre-reduction for density clustering;
  none       nothing (the SDK's NoReduction: also a way to turn the engine's own
             reduction off, since any steps replace it).
Clustering sees the transformed points; centroids, metrics and the layout are still
computed on the original vectors (the pipeline passes those on), so results stay in the
embedding space the user sent.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from contracts.engine_params import NoReductionStep, UMAPStep, WhiteningStep, validate_preprocessing

from .layout import umap_embedding

__all__ = ["preprocess", "whiten"]


def preprocess(X: np.ndarray, steps: list[Any] | None) -> tuple[np.ndarray, str]:
    """Apply ``steps`` (validated here) to ``X`` in order. Returns the transformed
    float32 matrix and a description such as ``"whitening(384)+umap(384->10)"``."""
    done: list[str] = []
    Z = np.ascontiguousarray(X, dtype=np.float32)
    for step in validate_preprocessing(steps):
        d = Z.shape[1]
        if isinstance(step, WhiteningStep):
            Z = whiten(Z, step.regularization)
            done.append(f"whitening({d})")
        elif isinstance(step, UMAPStep):
            if step.n_components >= len(Z) - 1:
                raise ValueError(
                    f"preprocessing_steps umap: n_components ({step.n_components}) must be below the number of "
                    f"points - 1 ({len(Z) - 1}); lower it"
                )
            Z = umap_embedding(Z, step.n_components, metric=step.metric, min_dist=step.min_dist,
                               seed=step.random_state, n_neighbors=step.n_neighbors)
            done.append(f"umap({d}->{step.n_components})")
        elif isinstance(step, NoReductionStep):
            done.append("none")
    return Z, "+".join(done)


def whiten(X: np.ndarray, regularization: float = 1e-5) -> np.ndarray:
    """PCA whitening: (X - mean) projected on the covariance's eigenvectors, each divided
    by sqrt(max(eigenvalue, regularization)). Keeps every dimension. A zero
    regularization with a zero-variance direction is refused (it would divide by 0)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) < 2:
        raise ValueError("whitening needs at least 2 points")
    centred = X - X.mean(axis=0)
    # The d x d covariance, not an SVD of the n x d matrix: d is a few hundred, n up to 1M.
    values, vectors = np.linalg.eigh(centred.T @ centred / (len(X) - 1))
    floor = np.maximum(values, regularization)
    if not np.all(floor > 0):
        raise ValueError("preprocessing_steps whitening: the vectors have a direction without variance; "
                         "set regularization > 0")
    return np.ascontiguousarray((centred @ vectors) / np.sqrt(floor), dtype=np.float32)
