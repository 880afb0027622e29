"""UMAP layouts. The first UMAP call in a process pays numba's JIT compile (see layout.py),
so the inputs here are small and each path is run once per module."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from sklearn.datasets import make_blobs

from services.clusterer.engine import project

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:umap")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny inputs gain nothing from threads, and on a shared box sklearn's OpenMP threads
    # made KMeans ~12x slower than one thread (see algorithms.py).
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def embeddings():
    X, _ = make_blobs(n_samples=300, n_features=32, centers=3, random_state=0)
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def layout_2d(embeddings):
    return project(embeddings, 2, seed=1)


@pytest.fixture(scope="module")
def sampled_layout(embeddings):
    progress: list[float] = []
    coords = project(embeddings, 3, seed=1, fit_sample=120, chunk_size=100, on_progress=progress.append)
    return coords, progress


def test_two_dimensional_layout(embeddings, layout_2d):
    assert layout_2d.shape == (len(embeddings), 2)
    assert layout_2d.dtype == np.float32
    assert np.isfinite(layout_2d).all()


def test_layout_is_reproducible(embeddings, layout_2d):
    np.testing.assert_array_equal(project(embeddings, 2, seed=1), layout_2d)


def test_fit_on_a_sample_then_transform_the_rest_in_chunks(embeddings, sampled_layout):
    coords, progress = sampled_layout
    assert coords.shape == (len(embeddings), 3)
    assert coords.dtype == np.float32 and np.isfinite(coords).all()
    assert coords[:, 2].std() > 0  # the third axis is really used
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert len(progress) == 1 + 2  # the fit, then 180 transformed points in chunks of 100


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 15])
@pytest.mark.parametrize("n_components", [2, 3])
def test_tiny_inputs_fall_back_without_crashing(n, n_components):
    X = np.random.default_rng(n).normal(size=(n, 384)).astype(np.float32)
    coords = project(X, n_components)
    assert coords.shape == (n, n_components) and coords.dtype == np.float32
    assert np.isfinite(coords).all()


def test_identical_points_fall_back_to_zeros():
    np.testing.assert_array_equal(project(np.ones((4, 8)), 2), np.zeros((4, 2), np.float32))


def test_only_two_or_three_components():
    with pytest.raises(ValueError, match="vis_n_components must be 2 or 3"):
        project(np.ones((30, 4)), 4)


def test_the_vectorised_init_graph_transform_equals_umaps_bit_for_bit():
    """layout.init_graph_transform replaces umap_'s per-row loop (a third of a transform's
    time): same float32 arithmetic in the same order, weights of exactly 1, empty rows
    (NaN) and rows of every length."""
    import scipy.sparse as sp

    from services.clusterer.engine import layout

    layout._install_init_graph_transform()
    original, init_graph_transform = layout.UMAP_INIT_GRAPH_TRANSFORM, layout.init_graph_transform
    assert original is not None and original is not init_graph_transform
    rng = np.random.default_rng(0)
    for rows, cols, nnz in ((45, 30, 200), (2_000, 500, 30_000)):
        data = rng.random(nnz).astype(np.float32)
        data[rng.choice(nnz, 5, replace=False)] = 1.0
        graph = sp.coo_matrix((data, (rng.integers(0, rows - 3, nnz), rng.integers(0, cols, nnz))),
                              shape=(rows, cols)).tocsr()
        graph.eliminate_zeros()
        embedding = rng.normal(size=(cols, 2)).astype(np.float32)
        expected = original(graph, embedding)
        assert np.isnan(expected[-3:]).all()
        assert np.array_equal(init_graph_transform(graph, embedding), expected, equal_nan=True)


def test_transform_rows_places_equal_chunks_so_every_point_gets_the_same_epochs() -> None:
    from services.clusterer.engine.layout import transform_rows

    class Reducer:
        n_components = 2

        def __init__(self) -> None:
            self.sizes = []

        def transform(self, X):
            self.sizes.append(len(X))
            return np.zeros((len(X), 2), np.float32)

    for n, sizes in ((65_536, [16_384] * 4), (38_928, [19_464] * 2), (20_000, [20_000]), (5, [5])):
        reducer = Reducer()
        assert transform_rows(reducer, np.zeros((n, 4), np.float32), 20_000).shape == (n, 2)
        assert reducer.sizes == sizes  # none of them a small remainder (umap: 100 epochs at <= 10,000)
