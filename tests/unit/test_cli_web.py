"""The run viewer's router (services/gateway/web) over fake ports: no servers."""
from __future__ import annotations

import re
from types import SimpleNamespace

import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clusterflow.settings import Settings
from services.gateway import errors
from services.gateway.web import router
from services.gateway.web.routes import STATIC, build_points, group_sort_key, like_pattern, snippet
from tests.fakes import FakeGatewayRepository, MemoryObjectStore


def members(n: int = 12) -> pl.DataFrame:
    ids = [f"d{i}" for i in range(n)]
    clusters = ["cl_10", "cl_2", "cl_-1", "cl_0"]
    return pl.DataFrame({"document_id": ids, "cluster_id": [clusters[i % 4] for i in range(n)],
                         "distance_to_centroid": [0.1] * n})


def coords(n: int = 12, z: bool = False) -> pl.DataFrame:
    # Reversed order: the join must follow the members, not the coordinates.
    columns = {"document_id": [f"d{i}" for i in reversed(range(n))],
               "x": [i + 0.123456 for i in reversed(range(n))], "y": [-float(i) for i in reversed(range(n))]}
    if z:
        columns["z"] = [i / 3 for i in reversed(range(n))]
    return pl.DataFrame(columns)


CENTROIDS = [{"cluster_id": "cl_0", "num_members": 3, "label": "Kings", "keywords": ["crown"]},
             {"cluster_id": "cl_2", "num_members": 3, "label": None, "keywords": []},
             {"cluster_id": "cl_10", "num_members": 3}, {"cluster_id": "cl_-1", "num_members": 3}]


def test_clusters_are_ordered_by_number_with_noise_last():
    assert sorted(["cl_-1", "cl_10", "cl_2", "x", "cl_0"], key=group_sort_key) == \
        ["cl_0", "cl_2", "cl_10", "x", "cl_-1"]


def test_build_points_columns():
    body = build_points(members(), coords(), CENTROIDS)
    assert [c["cluster_id"] for c in body["clusters"]] == ["cl_0", "cl_2", "cl_10", "cl_-1"]
    assert [c["index"] for c in body["clusters"]] == [0, 1, 2, 3]
    assert body["clusters"][0] == {"index": 0, "cluster_id": "cl_0", "num_members": 3, "label": "Kings",
                                   "summary": None, "keywords": ["crown"], "noise": False,
                                   "representatives": ["d11", "d3", "d7"]}  # ties by id
    assert body["clusters"][3]["noise"] is True
    assert body["document_id"] == [f"d{i}" for i in range(12)]
    assert body["cluster"][:4] == [2, 1, 3, 0]
    assert body["x"][:2] == [0.1235, 1.1235] and body["y"][1] == -1.0
    assert body["z"] is None and body["dimensions"] == 2
    assert body["total"] == 12 and body["sampled"] is False


def test_build_points_3d_missing_layout_and_sampling():
    assert build_points(members(), coords(z=True), CENTROIDS)["dimensions"] == 3
    deferred = build_points(members(), None, CENTROIDS)
    assert deferred["dimensions"] == 0 and deferred["x"] is None and len(deferred["document_id"]) == 12
    sample = build_points(members(1000), coords(1000), [], max_points=100)
    assert sample["sampled"] is True and sample["total"] == 1000 and len(sample["x"]) == 100
    assert all(x is not None for x in sample["x"])
    # Without summaries, sizes come from the members themselves.
    assert sum(c["num_members"] for c in build_points(members(), coords(), [])["clusters"]) == 12


def test_representatives_are_the_members_nearest_the_centroid_over_all_members():
    frame = pl.DataFrame({"document_id": [f"d{i}" for i in range(20)], "cluster_id": ["cl_0"] * 10 + ["cl_1"] * 10,
                          "distance_to_centroid": [float((i * 7) % 20) for i in range(20)]})
    body = build_points(frame, None, [], max_points=4)  # sampled: the representatives are not
    reps = {c["cluster_id"]: c["representatives"] for c in body["clusters"]}
    assert reps == {"cl_0": ["d0", "d3", "d6", "d9", "d1"], "cl_1": ["d12", "d15", "d18", "d10", "d13"]}
    hierarchy = [{"cluster_id": "cl_0", "num_members": 10, "hierarchy_level": 1, "parent_cluster_id": "cl_1"}]
    assert build_points(frame, None, hierarchy)["clusters"][0]["parent_cluster_id"] == "cl_1"
    assert "hierarchy_level" not in build_points(frame, None, [])["clusters"][0]


def test_search_pieces():
    assert like_pattern("50%_a") == "%50\\%\\_a%"
    field, text = snippet({"n": 3, "title": "Alan Turing", "text": "x" * 300 + " Enigma " + "y" * 300}, "enigma")
    assert field == "text" and "Enigma" in text and text.startswith("…") and text.endswith("…")
    assert len(text) <= 162
    assert snippet({"n": 3}, "zzz") == (None, "")


def fake_gateway(n: int) -> SimpleNamespace:
    """A gateway over the shared fakes: cluster clust_1 ("first") in both namespaces the
    tests use, with a completed run (run_1), a deferred-layout one and a pending one."""
    repo, store = FakeGatewayRepository(), MemoryObjectStore()
    store.put_parquet("m", members(n))
    store.put_parquet("xy", coords(n))
    for ns in ("team-a", "default"):
        repo.add_cluster(ns, "clust_1", cluster_name="first")
        repo.add_execution(ns, "clust_1", "run_pending", "PENDING")
        repo.add_execution(ns, "clust_1", "run_deferred", "COMPLETED", centroids=CENTROIDS,
                           artifacts={"members_key": "m", "centroids_key": "c", "coords_key": None})
        repo.add_execution(ns, "clust_1", "run_1", "COMPLETED", centroids=CENTROIDS,
                           metrics={"silhouette_score": 0.5}, clustering_method="kmeans",
                           artifacts={"members_key": "m", "centroids_key": "c", "coords_key": "xy"})
    repo.namespaces.clear()
    return SimpleNamespace(repo=repo, store=store)


@pytest.fixture
def web():
    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    app.state.gateway = fake_gateway(5000)
    app.state.gateway.settings = Settings(auth_required=False)
    with TestClient(app) as client:
        yield client, app.state.gateway


def test_points_endpoint(web):
    client, gw = web
    r = client.get("/v1/clusters/first/executions/run_1/points", headers={"X-Namespace": "team-a"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"  # 5,000 points are worth compressing
    body = r.json()
    assert body["cluster_id"] == "clust_1" and body["cluster_name"] == "first"
    assert body["collection_ids"] == ["col_1"] and body["metrics"]["silhouette_score"] == 0.5
    assert len(body["x"]) == len(body["y"]) == len(body["cluster"]) == len(body["document_id"]) == 5000
    assert gw.repo.namespaces == ["team-a"]


def test_points_of_a_deferred_layout(web):
    client, gw = web
    body = client.get("/v1/clusters/clust_1/executions/run_deferred/points").json()
    assert body["dimensions"] == 0 and body["x"] is None and len(body["document_id"]) == 5000
    # Once /visualization has stored the layout at the run's own key, the points carry it.
    gw.store.put_parquet("default/clust_1/run_deferred/coords.parquet", coords(5000, z=True))
    body = client.get("/v1/clusters/clust_1/executions/run_deferred/points").json()
    assert body["dimensions"] == 3 and len(body["z"]) == 5000


def test_points_errors_use_the_reference_shape(web):
    client, _ = web
    r = client.get("/v1/clusters/nope/executions/run_1/points")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Cluster not found"
    r = client.get("/v1/clusters/clust_1/executions/run_x/points")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Execution not found"
    r = client.get("/v1/clusters/clust_1/executions/run_pending/points")
    assert r.status_code == 400 and r.json()["error"]["code"] == "results_not_ready"
    r = client.get("/v1/clusters/clust_1/executions/run_1/points", headers={"X-Namespace": "bad ns"})
    assert r.status_code == 400


def test_view_is_one_self_contained_page(web):
    client, _ = web
    r = client.get("/v1/clusters/clust_1/executions/run_1/view?namespace=team-a")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<canvas" in page and "X-Namespace" in page and "/points" in page
    assert 'id="drawn-labels"' in page
    # No external scripts, styles or fonts: the machine may have no CDN access.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page)
    # Nor a script or stylesheet of its own beside it: everything is inline.
    assert not re.search(r"<script[^>]*\bsrc\s*=|<link[^>]*\bstylesheet", page, re.IGNORECASE)
    assert list(STATIC.iterdir()) == [STATIC / "view.html"]


def test_a_gateway_without_settings_fails_closed():
    """Authentication cannot be turned off by leaving the settings out of a gateway."""
    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    app.state.gateway = fake_gateway(5000)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/clusters/first/executions/run_1/points", headers={"X-Namespace": "team-a"})
    assert response.status_code == 500
