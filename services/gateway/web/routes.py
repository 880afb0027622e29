"""`GET .../executions/{run_id}/view`: a self-contained page (static/view.html) that
draws a run's layout on a canvas; `GET .../executions/{run_id}/points`: the compact
columnar JSON the page reads (100,000 points are about 4 MB of JSON, ~1.5 MB gzipped,
in one request instead of ten pages of `/data`).

The page itself needs no namespace (it is the same static file for every run); it
takes `?namespace=` from its own URL and sends it as `X-Namespace` on every fetch.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from clusterflow.storage import artifact_key
from contracts.api import ErrorResponse
from contracts.events import ClusterMetrics
from services.gateway.deps import GatewayDep, NamespaceDep
from services.gateway.routes.runs import run_with_results

STATIC = Path(__file__).resolve().parent / "static"
VIEW_PAGE = STATIC / "view.html"
DEFAULT_MAX_POINTS = 200_000
GZIP_MIN_BYTES = 32 * 1024

router = APIRouter(tags=["Viewer"])


class PointsCluster(BaseModel):
    index: int = Field(description="The value `cluster` holds for this cluster's points.")
    cluster_id: str = Field(description="'cl_<n>'; noise is 'cl_-1'.")
    num_members: int
    label: str | None = None
    summary: str | None = None
    keywords: list[str] = Field(default_factory=list)
    noise: bool = False
    representatives: list[str] = Field(default_factory=list, description=(
        "Up to 5 document ids nearest the cluster's centroid (over all members, sampled or not)."))
    hierarchy_level: int | None = Field(None, description="From the run's centroids, when they carry one.")
    parent_cluster_id: str | None = Field(None, description="From the run's centroids, when they carry one.")


class Points(BaseModel):
    """A run's layout as parallel columns: point i is (document_id[i], x[i], y[i], z[i], cluster[i])."""

    run_id: str
    cluster_id: str
    cluster_name: str | None = None
    collection_ids: list[str] = Field(default_factory=list)
    status: str
    clustering_method: str | None = None
    metrics: ClusterMetrics | None = None
    dimensions: int = Field(description="2 or 3; 0 when the run has no layout yet (visualization deferred: "
                            "GET .../visualization has the clusterer compute it).")
    total: int = Field(description="Members in the run.")
    sampled: bool = Field(description="True when only `max_points` of them are returned (a uniform sample).")
    clusters: list[PointsCluster]
    document_id: list[str]
    cluster: list[int]
    x: list[float | None] | None = None
    y: list[float | None] | None = None
    z: list[float | None] | None = None


_VIEW_DESCRIPTION = """An HTML page that draws the run's layout: a scatter plot on a canvas (3D with
mouse-drag rotation when the run has z), colored by cluster, labels at the cluster centers,
the clusters listed with sizes, labels and keywords (click one to highlight it), and a
document's payload on hover. Pass the namespace as `?namespace=` and the API key as the
fragment `#key=<key>` (never sent to a server): the page sends them as X-Namespace and
Authorization to `/points` and the documents endpoint. The page itself needs no key."""


@router.get("/v1/clusters/{cluster_id}/executions/{run_id}/view", response_class=HTMLResponse,
            description=_VIEW_DESCRIPTION, responses={200: {"content": {"text/html": {}}}})
async def view_page(cluster_id: str, run_id: str,
                    namespace: str | None = Query(None, description="Read by the page, sent as X-Namespace.")
                    ) -> HTMLResponse:
    del cluster_id, run_id, namespace  # the page reads them from its own URL
    return HTMLResponse(VIEW_PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


@router.get("/v1/clusters/{cluster_id}/executions/{run_id}/points", response_model=Points,
            responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def run_points(request: Request, cluster_id: str, run_id: str, gw: GatewayDep, ns: NamespaceDep,
                     max_points: int = Query(DEFAULT_MAX_POINTS, ge=1, le=2_000_000,
                                             description="Return a uniform sample when the run is larger.")
                     ) -> Response:
    """The run's points as columns, for drawing: ids, layout coordinates and cluster
    indexes into `clusters` (with their sizes, labels and keywords). Gzipped when the
    client accepts it."""
    cluster, row, artifacts = await run_with_results(gw, ns, cluster_id, run_id)
    body = await run_in_threadpool(_points_json, gw.store, ns, cluster, row, artifacts, max_points)
    headers = {"Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        body = await run_in_threadpool(gzip.compress, body, 5)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


def _points_json(store, ns: str, cluster: dict, row: dict, artifacts: dict, max_points: int) -> bytes:
    members = store.get_parquet(artifacts["members_key"], columns=["document_id", "cluster_id", "distance_to_centroid"])
    # A deferred layout appears at the run's own coords key once the clusterer computed it
    # (asked by GET .../visualization).
    coords_key = artifacts.get("coords_key") or artifact_key(ns, row["cluster_id"], row["run_id"], "coords")
    coords = store.get_parquet(coords_key) if artifacts.get("coords_key") or store.exists(coords_key) else None
    points = build_points(members, coords, row.get("centroids") or [], max_points)
    head = {
        "run_id": row["run_id"], "cluster_id": row["cluster_id"], "cluster_name": cluster.get("cluster_name"),
        "collection_ids": list(cluster.get("collection_ids") or []), "status": str(row["status"]),
        "clustering_method": row.get("clustering_method") or cluster.get("clustering_method"),
        "metrics": row.get("metrics"),
    }
    return json.dumps({**head, **points}, separators=(",", ":"), allow_nan=False).encode()


def group_sort_key(group_id: str) -> tuple[int, int, str]:
    """Group ids in order: cl_0, cl_1, ..., cl_10, then anything else, noise (cl_-1) last."""
    match = re.fullmatch(r"cl_(-?\d+)", group_id)
    if match is None:
        return (1, 0, group_id)
    number = int(match.group(1))
    return (2, 0, group_id) if number < 0 else (0, number, group_id)


REPRESENTATIVES = 5


def representatives(members: pl.DataFrame, per_cluster: int = REPRESENTATIVES) -> dict[str, list[str]]:
    """{cluster_id: the ids of its members nearest the centroid, nearest first}."""
    if "distance_to_centroid" not in members.columns or not members.height:
        return {}
    nearest = (members.filter(pl.col("distance_to_centroid").is_not_null())
               .sort("distance_to_centroid", "document_id")
               .group_by("cluster_id", maintain_order=True).head(per_cluster))
    found: dict[str, list[str]] = {}
    for cid, did in nearest.select("cluster_id", pl.col("document_id").cast(pl.String)).iter_rows():
        found.setdefault(cid, []).append(did)
    return found


def build_points(members: pl.DataFrame, coords: pl.DataFrame | None, centroids: list[dict[str, Any]],
                 max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Any]:
    """The columnar body: clusters in a stable order (cl_0, cl_1, ..., noise last), each
    point's cluster as an index into them, coordinates rounded to 4 decimals."""
    total = members.height
    nearest = representatives(members)
    members = members.select("document_id", "cluster_id")
    sampled = total > max_points
    if sampled:
        members = members.sample(n=max_points, seed=0, shuffle=False)
    summaries = {c["cluster_id"]: c for c in centroids}
    sizes = members.group_by("cluster_id").len() if not sampled else None
    ids = set(summaries) | set(members["cluster_id"].unique().to_list())
    ordered = sorted(ids, key=group_sort_key)
    clusters = []
    for index, cid in enumerate(ordered):
        summary = summaries.get(cid, {})
        size = summary.get("num_members")
        if size is None and sizes is not None:
            size = int(sizes.filter(pl.col("cluster_id") == cid)["len"].sum())
        entry = {
            "index": index, "cluster_id": cid, "num_members": int(size or 0), "label": summary.get("label"),
            "summary": summary.get("summary"), "keywords": list(summary.get("keywords") or []),
            "noise": group_sort_key(cid)[0] == 2, "representatives": nearest.get(cid, []),
        }
        # A hierarchy, when the run's centroids carry one: the page labels by level.
        entry.update({k: summary[k] for k in ("hierarchy_level", "parent_cluster_id") if summary.get(k) is not None})
        clusters.append(entry)
    index_of = {cid: i for i, cid in enumerate(ordered)}
    frame = members.with_columns(
        pl.col("cluster_id").replace_strict(index_of, return_dtype=pl.Int32).alias("cluster"))
    result: dict[str, Any] = {"total": total, "sampled": sampled, "clusters": clusters, "dimensions": 0,
                              "x": None, "y": None, "z": None}
    if coords is not None and coords.height:
        axes = [a for a in ("x", "y", "z") if a in coords.columns]
        frame = frame.join(coords.select("document_id", *axes), on="document_id", how="left", maintain_order="left")
        for axis in axes:
            result[axis] = frame[axis].cast(pl.Float64).fill_nan(None).round(4).to_list()
        result["dimensions"] = 3 if "z" in axes else 2
    result["document_id"] = frame["document_id"].cast(pl.String).to_list()
    result["cluster"] = frame["cluster"].to_list()
    return result


# --- search ---------------------------------------------------------------------------------

SEARCH_CAP = 10_000   # matching documents a search returns for highlighting
SEARCH_LISTED = 50    # of which listed with a snippet
SNIPPET_CHARS = 160


class SearchHit(BaseModel):
    document_id: str
    cluster_id: str
    field: str | None = Field(None, description="The payload field that matched.")
    snippet: str = Field(description="Text around the match.")


class SearchResult(BaseModel):
    query: str
    total: int = Field(description="Members of the run whose payload matched (at most the cap).")
    capped: bool
    document_id: list[str] = Field(description="Every matching member, for highlighting.")
    results: list[SearchHit] = Field(description=f"The first {SEARCH_LISTED}, with a snippet each.")


def like_pattern(query: str) -> str:
    """`%query%` for ILIKE, with the query's own %, _ and \\ taken literally."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", query) + "%"


def snippet(payload: Any, query: str, width: int = SNIPPET_CHARS) -> tuple[str | None, str]:
    """(field, text around the first match) over the payload's top-level values."""
    needle = query.casefold()
    items = payload.items() if isinstance(payload, dict) else []
    for key, value in items:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        at = text.casefold().find(needle)
        if at >= 0:
            start = max(0, at - width // 3)
            cut = text[start:start + width]
            return key, ("…" if start else "") + cut + ("…" if start + width < len(text) else "")
    return None, ""


@router.get("/v1/clusters/{cluster_id}/executions/{run_id}/search", response_model=SearchResult,
            responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def run_search(cluster_id: str, run_id: str, gw: GatewayDep, ns: NamespaceDep,
                     q: str = Query(..., min_length=1, max_length=200,
                                    description="Text to find (case-insensitive) in the payloads' values.")
                     ) -> SearchResult:
    """The run's members whose payload holds `q` in one of its top-level values: every
    id (to highlight on the map, up to a cap) and the first ones with a snippet."""
    cluster, _, artifacts = await run_with_results(gw, ns, cluster_id, run_id)
    collections = list(cluster.get("collection_ids") or [])
    matched = await gw.repo.documents_matching(collections, like_pattern(q), SEARCH_CAP + 1)
    members = await run_in_threadpool(gw.store.get_parquet, artifacts["members_key"],
                                      ["document_id", "cluster_id"])
    found = members.filter(pl.col("document_id").cast(pl.String).is_in(list(matched)))
    found = found.sort("document_id")
    capped = len(matched) > SEARCH_CAP
    found = found.head(SEARCH_CAP)
    listed = found.head(SEARCH_LISTED)
    payloads: dict[str, Any] = {}
    if listed.height:
        payloads = await gw.repo.payloads(collections, listed["document_id"].cast(pl.String).to_list())
    hits = []
    for did, cid in listed.select(pl.col("document_id").cast(pl.String), "cluster_id").iter_rows():
        field, text_ = snippet(payloads.get(did), q)
        hits.append(SearchHit(document_id=did, cluster_id=cid, field=field, snippet=text_))
    return SearchResult(query=q, total=found.height, capped=capped,
                        document_id=found["document_id"].cast(pl.String).to_list(), results=hits)
