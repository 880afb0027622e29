import numpy as np
import pytest

from services.clusterer.engine import graph


def test_knn_excludes_the_point_itself_even_among_duplicates():
    X = np.array([[0, 0], [0, 0], [1, 0], [5, 5], [5, 6]], dtype=np.float32)
    idx, dist = graph.knn(X, 2, "euclidean")
    assert idx.shape == dist.shape == (5, 2)
    assert all(i not in row for i, row in enumerate(idx))
    assert set(idx[0]) == {1, 2} and dist[0, 0] == 0
    assert (np.diff(dist, axis=1) >= 0).all()


def test_knn_above_the_exact_limit_uses_the_approximate_index(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 16)).astype(np.float32)
    exact, _ = graph.knn(X, 10, "cosine")
    monkeypatch.setattr(graph, "EXACT_KNN_MAX_POINTS", 100)
    approx, _ = graph.knn(X, 10, "cosine")
    assert all(i not in row for i, row in enumerate(approx))
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


@pytest.mark.parametrize(("k", "metric", "message"), [
    (0, "cosine", r"n_neighbors \(0\) must be between 1"), (5, "cosine", r"n_neighbors \(5\) must be between 1"),
    (2, "manhattan", 'metric must be "cosine" or "euclidean"'),
])
def test_knn_refuses_what_it_cannot_build(k, metric, message):
    with pytest.raises(ValueError, match=message):
        graph.knn(np.eye(5, dtype=np.float32)[:5], k, metric)


def test_weights_fall_with_distance():
    d = np.array([0.0, 0.5, 1.5], dtype=np.float32)
    cos = graph.similarity_weights(d, "cosine")
    euc = graph.similarity_weights(d, "euclidean")
    assert cos[0] == 1 and cos[1] == 0.5 and 0 < cos[2] < 1e-5
    assert (np.diff(euc) < 0).all() and euc[0] == 1


def test_leiden_splits_two_cliques_and_reports_its_quality():
    # Two 5-cliques joined by one weak edge.
    idx = np.array([[j for j in range(5) if j != i] for i in range(5)]
                   + [[j for j in range(5, 10) if j != i] for i in range(5, 10)])
    w = np.ones(idx.shape)
    idx[0, 0], w[0, 0] = 5, 0.01
    found = graph.leiden(idx, w, seed=1)
    assert len(set(found.labels[:5])) == 1 and len(set(found.labels[5:])) == 1
    assert found.labels[0] != found.labels[5]
    assert found.quality > 0
    with pytest.raises(ValueError, match="objective_function must be one of"):
        graph.leiden(idx, w, objective_function="surprise")


def test_local_scaling_weights_scale_each_edge_by_its_ends_own_neighbourhoods():
    # Two groups: one dense (spacing 0.01), one sparse (spacing 0.1), on a line.
    dense = np.column_stack([np.arange(10) * 0.01, np.zeros(10)])
    sparse = np.column_stack([5 + np.arange(10) * 0.1, np.zeros(10)])
    X = np.vstack([dense, sparse])
    idx, dist = graph.knn(X, 3, "euclidean")
    w = graph.local_scaling_weights(idx, dist, scale_neighbor=2)
    s = dist[:, 1]
    np.testing.assert_allclose(w, np.exp(-dist.astype(np.float64) ** 2 / (s[:, None] * s[idx])), rtol=1e-5)
    # A nearest-neighbour edge weighs about the same in either group (1 - d would not).
    inner = w[:, 0]
    assert abs(inner[:10].mean() - inner[10:].mean()) < 0.1
    assert graph.similarity_weights(dist, "euclidean")[:10, 0].mean() > graph.similarity_weights(dist, "euclidean")[10:, 0].mean() + 0.05
    assert w.dtype == np.float32 and (w > 0).all()
    with pytest.raises(ValueError, match="scale_neighbor"):
        graph.local_scaling_weights(idx, dist, scale_neighbor=4)
