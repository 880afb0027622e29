"""The map in headless Chromium on a large synthetic run: 200,000 points in 135 clusters
of very unequal sizes plus noise, the case where every label at once piles up.

The page is served with its /points and /search answered by this test's own HTTP server
(the real endpoints are exercised by test_cli_and_web.py; here the subject is the page:
label placement at two zoom levels, faint noise, and its own timings). A smaller run
with a hierarchy, its points built by the gateway's own `build_points` from centroids the
clusterer's `with_hierarchy` made, checks that zoomed out only its topics are labelled.
"""
from __future__ import annotations

import gzip
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations
from urllib.parse import parse_qs, urlparse

import numpy as np
import polars as pl
import pytest

from clusterflow.readmodel import stored
from contracts.events import CentroidSummary
from services.clusterer.handler import with_hierarchy
from services.gateway.web.routes import VIEW_PAGE, build_points
from tests.e2e.cdp import Browser
from tests.e2e.test_cli_and_web import chromium, count_color, read_png

pytestmark = pytest.mark.e2e

POINTS, CLUSTERS, NOISE = 200_000, 135, 0.05
NOISE_COLOR = "#c2c7cd"
FIRST_DRAW_TARGET_MS, REDRAW_TARGET_MS = 1500, 100


def synthetic_run(seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, CLUSTERS + 1) ** 0.9  # a few large clusters, a long tail of small ones
    sizes = np.maximum(30, (weights / weights.sum() * POINTS * (1 - NOISE)).astype(int))
    centers = rng.uniform(-10, 10, size=(CLUSTERS, 2))
    spread = 0.15 + 0.6 * np.sqrt(sizes / sizes.max())
    parts, labels = [], []
    for c, (n, center, s) in enumerate(zip(sizes, centers, spread)):
        parts.append(center + rng.normal(scale=s, size=(n, 2)))
        labels.append(np.full(n, c))
    noise = POINTS - int(sizes.sum())
    parts.append(rng.uniform(-11, 11, size=(noise, 2)))
    labels.append(np.full(noise, CLUSTERS))
    xy, cluster = np.concatenate(parts), np.concatenate(labels)
    clusters = [{"index": c, "cluster_id": f"cl_{c}", "num_members": int(sizes[c]), "noise": False,
                 "label": f"Topic {c} with a longer name", "keywords": [f"kw{c}"], "representatives": []}
                for c in range(CLUSTERS)]
    clusters.append({"index": CLUSTERS, "cluster_id": "cl_-1", "num_members": noise, "noise": True,
                     "label": None, "keywords": [], "representatives": []})
    return {"run_id": "run_big", "cluster_id": "clust_big", "cluster_name": "200K synthetic", "collection_ids": [],
            "status": "COMPLETED", "clustering_method": "kmeans", "metrics": None, "dimensions": 2,
            "total": POINTS, "sampled": False, "clusters": clusters,
            "document_id": [f"d{i}" for i in range(POINTS)], "cluster": cluster.tolist(),
            "x": np.round(xy[:, 0], 4).tolist(), "y": np.round(xy[:, 1], 4).tolist(), "z": None,
            "centers": centers}


@pytest.fixture(scope="module")
def page_server():
    run = synthetic_run()
    centers = run.pop("centers")
    with serving(run) as base:
        yield base, centers


@contextmanager
def serving(run: dict):
    points = gzip.compress(json.dumps(run).encode(), 5)
    html = VIEW_PAGE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            url = urlparse(self.path)
            if url.path.endswith("/view"):
                self.answer(html, "text/html")
            elif url.path.endswith("/points"):
                self.answer(points, "application/json", gzipped=True)
            elif url.path.endswith("/search"):
                q = parse_qs(url.query)["q"][0]
                found = [f"d{i}" for i in range(0, POINTS, 997)] if q == "every 997th" else []
                self.answer(json.dumps({"query": q, "total": len(found), "capped": False, "document_id": found,
                                        "results": []}).encode(), "application/json")
            else:
                self.send_error(404)

        def answer(self, data: bytes, kind: str, gzipped: bool = False):
            self.send_response(200)
            self.send_header("Content-Type", kind)
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/clusters/{run['cluster_id']}/executions/{run['run_id']}/view"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with Browser(chromium()) as b:
        yield b


READY = "document.body.dataset.state === 'ready'"


def labels_of(browser: Browser) -> list[dict]:
    return browser.evaluate("window.clusterflowLabels")


def meet(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_200k_points_first_draw_and_zoom_redraw(page_server, browser):
    base, _ = page_server
    browser.open(base + "?bench=20", until=READY)
    perf = browser.evaluate("window.clusterflowView")
    assert perf["points"] == POINTS and perf["redraws"] == 20
    figures = {"points": POINTS, **{k: round(perf[k], 1) for k in (
        "firstDrawMs", "fetchMs", "parseMs", "drawMs", "redrawMedianMs", "redrawMaxMs")}}
    print(json.dumps(figures))
    # The targets are a measurement (the printed line; docs/README.md quotes four runs:
    # first draw 632-1027 ms, redraw median 19-64 ms at load 3-11). The test keeps room of
    # twice them, so that a CI box shared past its cores fails only on a real regression.
    assert 0 < figures["drawMs"] and 0 < figures["redrawMedianMs"], figures  # real time, not virtual
    assert figures["firstDrawMs"] <= 2 * FIRST_DRAW_TARGET_MS, figures
    assert figures["redrawMedianMs"] <= 2 * REDRAW_TARGET_MS, figures


def test_labels_never_overlap_at_two_zoom_levels_and_more_appear_zoomed_in(page_server, browser, tmp_path):
    base, centers = page_server
    cx, cy = (float(v) / 11 for v in centers[3])  # around cluster 3, in the page's normalized coordinates
    views = {"out": base, "in": base + f"?zoom=6&cx={cx:.3f}&cy={cy:.3f}"}
    drawn, collisions = {}, 0
    for name, url in views.items():
        browser.open(url, until=READY)
        labels = labels_of(browser)
        assert labels, f"no labels drawn zoomed {name}"
        overlapping = [(a["cluster_id"], b["cluster_id"]) for a, b in combinations(labels, 2)
                       if meet(a["box"], b["box"])]
        assert overlapping == [], f"zoomed {name}: labels overlap: {overlapping}"
        # A label left out for a collision met one of a higher level or of a cluster at least as large.
        hidden = browser.evaluate("window.clusterflowHiddenLabels")
        collisions += len(hidden)
        for h in hidden:
            winners = [d for d in labels if meet(d["box"], h["box"])]
            assert any(d["level"] < h["level"] or (d["level"] == h["level"] and d["size"] >= h["size"])
                       for d in winners), f"zoomed {name}: {h} lost to {winners}"
        image = read_png(browser.screenshot(tmp_path / f"zoom-{name}.png"))
        # Every box reported holds dark text pixels: the boxes are the labels on screen.
        for label in labels:
            left, top, w, h = (int(v) for v in label["box"])
            region = image[top:top + h, left:left + w]
            assert (region.max(axis=2) < 90).sum() > 5, f"zoomed {name}: no text inside {label}"
        drawn[name] = {label["cluster_id"]: label["level"] for label in labels}
        if name == "out":
            assert count_color(image, NOISE_COLOR) > 500, "noise is not visible"
    assert collisions > 0, "no label collided: the larger-wins check above tested nothing"
    # Zoomed out: only the top level, far fewer than 135 labels; zoomed in, others appear.
    assert set(drawn["out"].values()) == {0} and len(drawn["out"]) < 20, drawn["out"]
    assert set(drawn["in"]) - set(drawn["out"]), drawn
    assert max(drawn["in"].values()) >= 1


def test_search_matches_are_drawn_on_top(page_server, browser, tmp_path):
    base, _ = page_server
    browser.open(base + "?q=every%20997th", until=READY)
    panel = browser.evaluate("Object.assign({}, document.getElementById('search-results').dataset)")
    assert panel["matches"] == "201" and panel["drawn"] == "201", panel
    image = read_png(browser.screenshot(tmp_path / "search.png"))
    assert count_color(image[:, :870], "#e6007e") > 201 * 4


def test_a_runs_hierarchy_labels_its_topics_zoomed_out_and_its_clusters_zoomed_in(browser):
    """The points body built by the gateway (build_points) from centroids the clusterer
    made (with_hierarchy): 4 regions of 6 clusters each; zoomed out only the topics."""
    rng = np.random.default_rng(3)
    regions = np.array([[-6, -6], [6, -6], [-6, 6], [6, 6]], dtype=float)
    centers = np.concatenate([r + rng.normal(scale=1.6, size=(6, 2)) for r in regions])
    xy = np.concatenate([c + rng.normal(scale=0.3, size=(400, 2)) for c in centers])
    cluster = np.repeat(np.arange(len(centers)), 400)
    leaves = [CentroidSummary(group_id=f"cl_{c}", num_members=400, label=f"Cluster {c} words")
              for c in range(len(centers))]
    # the centroids a 2-D run would have (padded: Ward works on unit vectors)
    summaries = with_hierarchy(leaves, np.hstack([centers, np.full((len(centers), 1), 8.0)]), 3)
    topics = {c.group_id for c in summaries if c.child_group_ids}
    summaries = [c.model_copy(update={"label": c.label or f"Topic {c.group_id}"}) for c in summaries]
    members = pl.DataFrame({"document_id": [f"d{i}" for i in range(len(xy))],
                            "cluster_id": [f"cl_{c}" for c in cluster],
                            "distance_to_centroid": np.zeros(len(xy), dtype=np.float32)})
    coords = pl.DataFrame({"document_id": members["document_id"], "x": xy[:, 0], "y": xy[:, 1]})
    body = build_points(members, coords, stored(summaries))  # as the read model holds them
    run = {"run_id": "run_tree", "cluster_id": "clust_tree", "cluster_name": "hierarchy", "collection_ids": [],
           "status": "COMPLETED", "clustering_method": "auto", "metrics": None, **body}
    assert topics and all(c.get("parent_cluster_id") for c in body["clusters"]
                          if c["cluster_id"] not in topics and not c["noise"])
    with serving(run) as base:
        browser.open(base, until=READY)
        out = {label["cluster_id"] for label in labels_of(browser)}
        assert out and out <= topics, out
        lo, hi = xy.min(axis=0), xy.max(axis=0)  # the page's normalized coordinates: [-1, 1] on the largest side
        cx, cy = (centers[0] - (lo + hi) / 2) * 2 / (hi - lo).max()
        browser.open(base + f"?zoom=8&cx={cx:.3f}&cy={cy:.3f}", until=READY)
        zoomed = {label["cluster_id"] for label in labels_of(browser)}
        assert zoomed - topics, zoomed
