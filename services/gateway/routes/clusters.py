"""Cluster definitions: create, read, patch, delete, list.

The bodies are clusterflow's own and the hosted SDK's at once (contracts.resources):
unknown keys are ignored and named in the answer's `warnings`, as the hosted API does;
knobs the SDK always sends are accepted at their defaults and refused otherwise."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from contracts.api import DEFAULT_HIERARCHY_DEPTH, ErrorResponse, LayoutStability
from contracts.resources import (
    FLAT_CONFIG_FIELDS,
    Cluster,
    ClusterList,
    CreateClusterRequest,
    ListClustersRequest,
    Pagination,
    PatchClusterRequest,
    unknown_keys,
)
from services.gateway.deps import GatewayDep, NamespaceDep, Page, PageDep
from services.gateway.errors import ApiError, bad_request, not_found
from contracts.engine_params import validate_preprocessing
from services.gateway.validation import (
    check_algorithm,
    check_filters,
    check_preprocessing,
    check_supported,
    llm_labeling_fields,
    parse_filters,
    strip_sdk_knobs,
)

router = APIRouter(prefix="/v1/clusters", tags=["Clusters"])

_SORTABLE = {"created_at", "updated_at", "cluster_name", "clustering_method"}
_ERRORS = {400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}
_TOP_LEVEL_UNSUPPORTED = ("attribute_config", "enrich_source_collection", "source_enrichment_config",
                          "auto_execute_on_batch", "auto_execute_min_documents", "auto_execute_cooldown_seconds",
                          "source_cluster_ids")
_VECTOR_UNSUPPORTED = ("multi_feature_strategy", "normalize_features", "feature_weights", "weight_learning_config",
                       "output_strategy", "effective_feature_method", "enrich_source", "face_cluster_merge")


def _configuration(body: CreateClusterRequest) -> dict[str, Any]:
    """The run configuration from the flat fields or from `vector_config` (not both)."""
    vc = body.vector_config
    if vc is None:
        method, params, loc = body.clustering_method, body.algorithm_params, "algorithm_params"
        config = {"embedding_name": body.embedding_name, "sample_size": body.sample_size,
                  "vis_n_components": body.vis_n_components, "defer_visualization": body.defer_visualization}
        source: Any = body
    else:
        both = sorted(body.model_fields_set & set(FLAT_CONFIG_FIELDS))
        if both:
            raise bad_request(f"give the configuration once: vector_config, or the flat fields {both}, not both",
                              code="conflicting_configuration", fields=both)
        check_supported({f"vector_config.{k}": getattr(vc, k) for k in _VECTOR_UNSUPPORTED})
        method, loc = vc.clustering_method, "vector_config.algorithm_params"
        params = vc.algorithm_params or vc.kmeans_parameters or vc.dbscan_parameters or vc.hdbscan_parameters or {}
        config = {"embedding_name": vc.embedding(), "sample_size": vc.sample_size,
                  "vis_n_components": vc.vis_n_components or 2, "defer_visualization": bool(vc.defer_visualization)}
        source = vc
    if method == "attribute_based":
        raise bad_request("clustering_method 'attribute_based' is not supported yet: clusterflow clusters vectors",
                          code="unsupported_method", field="clustering_method")
    params = strip_sdk_knobs(method, params, loc)
    where = ("body", "vector_config") if vc else ("body",)
    check_algorithm(method, params, loc=where)
    steps = source.preprocessing_steps or None
    check_preprocessing(steps, loc=where)
    return {
        **config, "clustering_method": method, "algorithm_params": params,
        # Stored as validated, with each step's defaults filled in (what will run).
        "preprocessing_steps": [step.model_dump() for step in validate_preprocessing(steps)] if steps else None,
        "hierarchical": bool(source.hierarchical),
        "max_hierarchy_depth": source.max_hierarchy_depth or DEFAULT_HIERARCHY_DEPTH,
        "layout_stability": (source.layout_stability or LayoutStability.align).value,
    }


@router.post("", response_model=Cluster, responses=_ERRORS)
async def create_cluster(body: CreateClusterRequest, gw: GatewayDep, ns: NamespaceDep) -> dict:
    if body.cluster_type == "attribute":
        raise bad_request("cluster_type 'attribute' is not supported yet: clusterflow clusters vectors; send "
                          "cluster_type 'vector' with a vector_config", code="unsupported_cluster_type",
                          field="cluster_type")
    check_supported({k: getattr(body, k) for k in _TOP_LEVEL_UNSUPPORTED} | llm_labeling_fields(body.llm_labeling))
    config = _configuration(body)
    check_filters(body.filters)

    found = [await gw.repo.get_collection(ns, cid) for cid in body.collection_ids]
    missing = [cid for cid, c in zip(body.collection_ids, found) if c is None]
    if missing:
        raise ApiError(404, f"Collection not found: {', '.join(missing)}",
                       details={"resource": "collection", "id": missing[0]})
    config["embedding_name"] = _embedding_for(config["embedding_name"], found)

    row = await gw.repo.create_cluster(ns, {
        **config,
        "cluster_name": body.cluster_name,
        "description": body.description,
        "collection_ids": [c["collection_id"] for c in found],
        "filters": body.filters.model_dump(mode="json", exclude_none=True) if body.filters else None,
        "llm_labeling": body.llm_labeling.model_dump(mode="json") if body.llm_labeling else None,
        "metadata": body.metadata or {},
    })
    return {**row, "warnings": unknown_keys(body)}


def _embedding_for(requested: str | None, collections: list[dict]) -> str:
    """The named embedding to cluster: it must exist, with one dimension, in every collection."""
    shared = set.intersection(*(set(c["embeddings"]) for c in collections))
    if requested is None:
        if len(shared) != 1:
            raise bad_request(
                f"embedding_name is required: the collections share the embeddings {sorted(shared)}",
                code="embedding_name_required",
            )
        requested = next(iter(shared))
    if requested not in shared:
        raise bad_request(f"embedding {requested!r} is not declared by every collection (shared: {sorted(shared)})",
                          code="unknown_embedding")
    dims = {c["embeddings"][requested] for c in collections}
    if len(dims) > 1:
        raise bad_request(f"embedding {requested!r} has different dimensions across collections: {sorted(dims)}",
                          code="dimension_mismatch")
    return requested


@router.get("/{cluster_id}", response_model=Cluster, responses=_ERRORS)
async def get_cluster(cluster_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    """By id or by name (the newest cluster of that name)."""
    row = await gw.repo.get_cluster(ns, cluster_id)
    if row is None:
        raise not_found("cluster", cluster_id)
    return row


@router.patch("/{cluster_id}", response_model=Cluster, responses=_ERRORS)
async def patch_cluster(cluster_id: str, body: PatchClusterRequest, gw: GatewayDep, ns: NamespaceDep) -> dict:
    cluster = await gw.repo.get_cluster(ns, cluster_id)
    if cluster is None:
        raise not_found("cluster", cluster_id)
    # declared fields only: the ignored keys (named in warnings) never reach the table
    values = {k: v for k, v in body.model_dump(exclude_unset=True).items() if k in type(body).model_fields}
    check_supported({k: values.pop(k) for k in ("face_cluster_merge", "source_cluster_ids")
                     if k in values} | llm_labeling_fields(body.llm_labeling))
    if "layout_stability" in values:
        values["layout_stability"] = (body.layout_stability or LayoutStability.align).value
    if "cluster_name" in values and values["cluster_name"] is None:
        raise bad_request("cluster_name cannot be null")
    if "metadata" in values and values["metadata"] is None:
        values["metadata"] = {}  # null clears it (stored as JSON null, it broke every later read)
    if "filters" in values:
        check_filters(body.filters)
        values["filters"] = body.filters.model_dump(mode="json", exclude_none=True) if body.filters else None
    if "algorithm_params" in values:
        params = strip_sdk_knobs(cluster["clustering_method"], body.algorithm_params or {}, "algorithm_params")
        check_algorithm(cluster["clustering_method"], params)
        values["algorithm_params"] = params
    if "llm_labeling" in values:
        values["llm_labeling"] = body.llm_labeling.model_dump(mode="json") if body.llm_labeling else None
    if values and not await gw.repo.update_cluster(ns, cluster["cluster_id"], values):
        raise not_found("cluster", cluster_id)
    return {**await get_cluster(cluster["cluster_id"], gw, ns), "warnings": unknown_keys(body)}


@router.delete("/{cluster_id}", responses=_ERRORS)
async def delete_cluster(cluster_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    row = await gw.repo.get_cluster(ns, cluster_id)
    if row is None:
        raise not_found("cluster", cluster_id)
    await gw.repo.delete_cluster(ns, row["cluster_id"])
    # Artifacts go with the definition; the run history (tasks) stays readable.
    deleted = await run_in_threadpool(gw.store.delete_prefix, f"{ns}/{row['cluster_id']}/")
    return {"success": True, "cluster_id": row["cluster_id"], "artifacts_deleted": deleted,
            "message": f"cluster {row['cluster_id']} deleted"}


async def _list(gw, ns: str, body: ListClustersRequest, page: Page) -> ClusterList:
    sort = body.sort or ListClustersRequest().sort
    if sort.field not in _SORTABLE:
        raise bad_request(f"cannot sort by {sort.field!r}; use one of {sorted(_SORTABLE)}", code="invalid_sort")
    rows, total, stats = await gw.repo.list_clusters(
        ns, filters=parse_filters(body.filters) if body.filters else None, search=body.search, sort_field=sort.field,
        descending=sort.direction == "desc", limit=page.limit, offset=page.offset,
    )
    return ClusterList(results=[Cluster.model_validate(r) for r in rows],
                       pagination=Pagination.of(page.limit, page.offset, total), total_count=total, stats=stats,
                       warnings=unknown_keys(body))


@router.post("/list", response_model=ClusterList, responses=_ERRORS)
async def list_clusters(gw: GatewayDep, ns: NamespaceDep, page: PageDep,
                        body: ListClustersRequest | None = None) -> ClusterList:
    """Paged by query (`limit`/`page_size`, `offset`/`page`/`cursor`) or by the body's
    `limit`/`page_size`/`offset`/`page` when the query has none."""
    body = body or ListClustersRequest()
    return await _list(gw, ns, body, page.over(body))


@router.get("", response_model=ClusterList, responses=_ERRORS)
async def list_clusters_get(gw: GatewayDep, ns: NamespaceDep, page: PageDep,
                            search: str | None = Query(None, max_length=256)) -> ClusterList:
    return await _list(gw, ns, ListClustersRequest(search=search), page)
