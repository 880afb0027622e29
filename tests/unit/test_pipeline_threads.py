"""The pipeline's BLAS/OpenMP thread count is its caller's parameter (the composition
root passes CLUSTERFLOW_CLUSTERER_THREADS down), not a setting read inside it."""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from services.clusterer import pipeline


@pytest.mark.parametrize("threads", [1, 2])
def test_each_stage_runs_under_the_threads_it_is_given(monkeypatch, threads):
    seen: list[set[int]] = []

    def spy(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpool_info()})
        return "clustered"

    monkeypatch.setattr(pipeline, "run_clustering", spy)
    monkeypatch.setattr(pipeline, "project", spy)
    # a setting that says otherwise is not what the pipeline follows
    monkeypatch.setenv("CLUSTERFLOW_CLUSTERER_THREADS", "3")
    X = np.zeros((4, 2), np.float32)
    assert pipeline.cluster(X, "kmeans", {}, 42, threads=threads) == "clustered"
    assert pipeline.layout(X, 2, 42, threads=threads) == "clustered"
    if not threadpool_info():
        pytest.skip("no BLAS/OpenMP pool loaded to limit")
    assert seen == [{threads}, {threads}]

