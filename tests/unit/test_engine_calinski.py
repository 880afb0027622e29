"""The chunked Calinski-Harabasz score equals scikit-learn's."""
import numpy as np
import pytest
from sklearn.metrics import calinski_harabasz_score

from services.clusterer.engine.metrics import calinski_harabasz


@pytest.mark.parametrize("n,k,d", [(200, 2, 3), (3000, 7, 64), (20_000, 12, 16)])
def test_matches_scikit_learn(n, k, d):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, d)).astype(np.float32) + rng.integers(0, 3, size=(n, 1))
    labels = rng.integers(0, k, n)
    labels[:k] = np.arange(k)
    assert calinski_harabasz(X, labels) == pytest.approx(calinski_harabasz_score(X, labels), rel=1e-5)


def test_identical_points_score_one_like_scikit_learn():
    X = np.ones((10, 3), dtype=np.float32)
    labels = np.array([0] * 5 + [1] * 5)
    assert calinski_harabasz(X, labels) == calinski_harabasz_score(X, labels) == 1.0
