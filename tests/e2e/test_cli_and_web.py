"""The `clusterflow` CLI and the run viewer against the whole system.

The viewer is checked in headless Chromium (Debian's `chromium` package, expected at
/usr/bin/chromium or on PATH; `apt-get install -y chromium`): a screenshot of the page
must show the clusters' palette colors, and the DOM must list the labels drawn.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.e2e.cdp import Browser
from tests.e2e.conftest import wait_for_task
from tests.support.corpus import separated_groups

pytestmark = pytest.mark.e2e

GROUPS, PER_GROUP, DIM = 4, 150, 64  # 600 documents



# --- the viewer ---------------------------------------------------------------------------

def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found is None:
        pytest.fail("headless Chromium is needed for the viewer test: apt-get install -y chromium", pytrace=False)
    return found


def browse(url: str, *, screenshot: Path | None = None) -> str:
    """Run headless Chromium once: a screenshot (returns "") or the DOM (returns it)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--force-color-profile=srgb",
                # Without it a screenshot may be taken before the canvas reaches the compositor.
                "--run-all-compositor-stages-before-draw",
                f"--user-data-dir={profile}", "--window-size=1200,800", "--virtual-time-budget=10000"]
        argv += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or (screenshot and not screenshot.exists()):
        raise AssertionError(f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def read_png(path: Path) -> np.ndarray:
    """A minimal PNG decoder (8-bit RGB or RGBA, not interlaced): (height, width, 3) uint8."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, chunk = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, color, interlace = header[8], header[9], header[12]
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unsupported PNG: depth {depth} color {color}"
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(bytes(idat)), width * bpp
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(height, width, bpp)[:, :, :3]


def count_color(image: np.ndarray, hex_color: str) -> int:
    rgb = [int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]
    return int(np.all(image == np.array(rgb, dtype=np.uint8), axis=2).sum())


@pytest.fixture(scope="module")
def corpus(api, stack):
    X, truth = separated_groups(GROUPS, PER_GROUP, DIM, seed=11)
    r = api.post("/v1/collections", json={"collection_name": "e2e-viewer", "embeddings": {"text": DIM}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    docs = [{"document_id": f"v_{i:04d}", "payload": {"group": int(truth[i]), "title": f"viewer document {i}"},
             "embeddings": {"text": X[i].tolist()}} for i in range(len(X))]
    r = api.post(f"/v1/collections/{collection_id}/documents", json={"documents": docs})
    assert r.status_code == 200, r.text
    return collection_id


@pytest.fixture(scope="module")
def viewer_run(api, stack, corpus) -> tuple[str, str]:
    r = api.post("/v1/clusters", json={"collection_ids": [corpus], "cluster_name": "viewer run",
                                       "clustering_method": "kmeans", "algorithm_params": {"n_clusters": GROUPS}})
    assert r.status_code == 200, r.text
    cluster_id = r.json()["cluster_id"]
    task = api.post(f"/v1/clusters/{cluster_id}/execute").json()
    done = wait_for_task(api, task["task_id"], stack=stack)
    assert done["status"] == "COMPLETED", done
    return cluster_id, done["additional_data"]["run_id"]


def test_view_page_draws_the_clusters_and_their_labels(api, stack, viewer_run, tmp_path):
    cluster_id, run_id = viewer_run

    points = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}/points")
    assert points.status_code == 200, points.text
    body = points.json()
    assert body["dimensions"] == 2 and len(body["x"]) == GROUPS * PER_GROUP
    assert [c["cluster_id"] for c in body["clusters"]] == [f"cl_{i}" for i in range(GROUPS)]

    url = f"{stack.url}/v1/clusters/{cluster_id}/executions/{run_id}/view?namespace=e2e#key={stack.api_key}"
    page = api.get(url)
    assert page.status_code == 200 and "<canvas" in page.text

    started = time.monotonic()
    dom = browse(url)
    dom_s = time.monotonic() - started
    assert re.search(r'<body[^>]*data-state="ready"', dom), dom[:3000]
    # The side list: one item per cluster with its color and size.
    items = re.findall(r'<li data-cluster="(cl_\d+)" data-index="\d+" data-color="(#[0-9a-f]{6})" '
                       r'data-size="(\d+)"', dom)
    assert [i[0] for i in items] == [f"cl_{i}" for i in range(GROUPS)], items
    assert sum(int(i[2]) for i in items) == GROUPS * PER_GROUP
    colors = {cid: color for cid, color, _ in items}
    assert len(set(colors.values())) == GROUPS
    # The labels drawn on the canvas, mirrored in #drawn-labels.
    drawn_list = re.search(r'<ul id="drawn-labels"[^>]*>(.*?)</ul>', dom, re.S).group(1)
    drawn = dict(re.findall(r'<li data-cluster="(cl_\d+)"[^>]*>([^<]+)</li>', drawn_list))
    assert sorted(drawn) == sorted(colors), drawn_list
    assert all(text.strip() for text in drawn.values())
    assert re.search(r'id="perf" data-points="600"', dom)

    shot = tmp_path / "view.png"
    started = time.monotonic()
    browse(url, screenshot=shot)
    shot_s = time.monotonic() - started
    image = read_png(shot)
    assert image.shape[:2] == (800, 1200)
    plot = image[:, :1200 - 330]  # the canvas; the side list (320 px, with color swatches) is cut off
    counts = {cid: count_color(plot, color) for cid, color in colors.items()}
    # Each cluster's 150 points are 4x4 squares: overlaps aside, hundreds of pixels each.
    assert all(n >= 200 for n in counts.values()), counts
    print(f"viewer: dump-dom {dom_s:.1f}s, screenshot {shot_s:.1f}s, pixels per cluster {counts}")


def test_view_search_highlights_the_matching_points_and_the_panel_shows_representatives(api, stack, viewer_run,
                                                                                       tmp_path):
    cluster_id, run_id = viewer_run
    expected = sorted(f"v_{i:04d}" for i in range(GROUPS * PER_GROUP) if "document 12" in f"viewer document {i}")
    r = api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}/search", params={"q": "DOCUMENT 12"})
    assert r.status_code == 200, r.text
    found = r.json()
    assert found["document_id"] == expected and found["total"] == len(expected) == 11
    assert found["results"][0]["field"] == "title" and "viewer document 12" in found["results"][0]["snippet"]
    assert api.get(f"/v1/clusters/{cluster_id}/executions/{run_id}/search", params={"q": "%"}).json()["total"] == 0

    base = f"{stack.url}/v1/clusters/{cluster_id}/executions/{run_id}/view?namespace=e2e"
    with Browser(chromium()) as browser:
        browser.open(f"{base}&q=document%2012#key={stack.api_key}",
                     until="document.getElementById('search-results').dataset.drawn !== undefined")
        hits = browser.evaluate("[...document.querySelectorAll('#search-results li')].map("
                                "li => [li.dataset.id, +li.dataset.x, +li.dataset.y])")
        assert sorted(h[0] for h in hits) == expected
        panel = browser.evaluate("Object.assign({}, document.getElementById('search-results').dataset)")
        assert panel["matches"] == panel["drawn"] == "11"
        image = read_png(browser.screenshot(tmp_path / "search.png"))
        canvas_top = browser.evaluate("document.getElementById('canvas').getBoundingClientRect().top")
        match = np.array([0xE6, 0x00, 0x7E], dtype=np.uint8)
        # Each hit's point is drawn in the match color, except where a label (drawn on top,
        # with its white halo) covers it.
        boxes = [label["box"] for label in browser.evaluate("window.clusterflowLabels")]
        visible = [(d, x, y + canvas_top) for d, x, y in hits
                   if not any(b[0] - 4 <= x <= b[0] + b[2] + 4 and b[1] - 4 <= y + canvas_top <= b[1] + b[3] + 4
                              for b in boxes)]
        assert len(visible) >= len(hits) // 2, (hits, boxes)
        for document_id, x, y in visible:
            assert (image[int(y), int(x)] == match).all(), (document_id, x, y, image[int(y), int(x)])
        assert count_color(image, "#e6007e") >= 11 * 25  # 11 points of at least 5x5 px

        # The selected cluster's panel: its representatives, nearest the centroid first.
        browser.open(f"{base}&cluster=cl_1#key={stack.api_key}",
                     until="document.querySelectorAll('#representatives li div').length === 5")
        shown = browser.evaluate("[...document.querySelectorAll('#representatives li')].map(li => li.dataset.id)")
    members = api.post(f"/v1/clusters/{cluster_id}/executions/{run_id}/data",
                       json={"include_members": True, "limit": 10_000}).json()
    nearest = sorted((m["distance_to_centroid"], m["document_id"]) for m in members["members"]
                     if m["cluster_id"] == "cl_1")[:5]
    assert shown == [d for _, d in nearest]


# --- the CLI ------------------------------------------------------------------------------

def cli(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    entry = Path(sys.executable).with_name("clusterflow")
    argv = [str(entry)] if entry.exists() else [sys.executable, "-m", "clusterflow.client.cli"]
    env = {**os.environ, "CLUSTERFLOW_URL": stack.url, "CLUSTERFLOW_NAMESPACE": "e2e", "COLUMNS": "200",
           "CLUSTERFLOW_API_KEY": stack.api_key}
    done = subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert done.returncode == 0, f"clusterflow {' '.join(args)} exited {done.returncode}:\n" \
                                     f"{done.stdout}\n{done.stderr}\n{stack.log_tails()}"
    return done


def test_cli_end_to_end(stack, tmp_path, unique):
    X, truth = separated_groups(3, 40, 16, seed=5)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(
        json.dumps({"document_id": f"cli_{i:03d}", "embedding": X[i].tolist(), "group": int(truth[i]),
                    "title": f"cli document {i}"}) + "\n" for i in range(len(X))))

    collection = json.loads(cli(stack, "collections", "create", f"cli-{unique}", "--embedding", "text=16",
                                "--json").stdout)
    ingested = cli(stack, "ingest", collection["collection_id"], str(source), "--batch-size", "50")
    assert f"upserted {len(X)} documents" in ingested.stdout and "in 3 batches" in ingested.stdout
    assert f"cli-{unique}" in cli(stack, "collections", "list").stdout

    cluster = json.loads(cli(stack, "clusters", "create", "--collection", f"cli-{unique}", "--name",
                             f"cli-{unique}", "--method", "kmeans", "--param", "n_clusters=3", "--json").stdout)
    assert cluster["algorithm_params"] == {"n_clusters": 3}

    executed = cli(stack, "execute", cluster["cluster_id"], "--wait", "--wait-timeout", "240", "--json")
    final = json.loads(executed.stdout)
    assert final["status"] == "COMPLETED"
    run_id = final["additional_data"]["run_id"]

    results = cli(stack, "results", cluster["cluster_id"], run_id)
    assert "COMPLETED" in results.stdout and "3 clusters" in results.stdout
    assert all(f"cl_{i}" in results.stdout for i in range(3)) and "silhouette" in results.stdout

    out = tmp_path / "members.parquet"
    cli(stack, "export", cluster["cluster_id"], run_id, str(out))
    members = pl.read_parquet(out)
    assert members.height == len(X)
    assert members.columns == ["document_id", "cluster_id", "distance_to_centroid", "x", "y", "z"]
    assert members["document_id"].n_unique() == len(X) and members["x"].null_count() == 0

    assert "COMPLETED" in cli(stack, "task", final["task_id"]).stdout

    # The view: link the CLI prints opens the run when pasted (the key rides in its fragment).
    again = cli(stack, "execute", cluster["cluster_id"], "--wait", "--wait-timeout", "240")
    link = next(line.split(None, 1)[1] for line in again.stdout.splitlines() if line.startswith("view:"))
    assert link.endswith(f"#key={stack.api_key}") and stack.api_key not in link.split("#")[0]
    with Browser(chromium()) as browser:
        browser.open(link)
        assert browser.evaluate("document.body.dataset.state") == "ready"
        assert browser.evaluate("document.querySelectorAll('#clusters li').length") == 3
        assert browser.evaluate("location.hash") == ""  # the key left the address bar

    missing = cli(stack, "execute", "clust_missing", check=False)
    assert missing.returncode == 1
    assert missing.stderr == "error: HTTP 404: Cluster not found\n"
