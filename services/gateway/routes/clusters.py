"""Cluster definitions: create, read, patch, delete, list."""
from __future__ import annotations

from fastapi import APIRouter, Query

from contracts.resources import (
    Cluster,
    ClusterList,
    CreateClusterRequest,
    ListClustersRequest,
    Pagination,
    PatchClusterRequest,
)
from services.gateway.deps import GatewayDep, NamespaceDep
from services.gateway.errors import ApiError, bad_request, not_found
from contracts.engine_params import validate_preprocessing
from services.gateway.validation import check_algorithm, check_filters, check_preprocessing

router = APIRouter(prefix="/v1/clusters", tags=["Clusters"])

_SORTABLE = {"created_at", "updated_at", "cluster_name", "clustering_method"}
_EXACT = {"cluster_name", "clustering_method", "collection_id"}


@router.post("", response_model=Cluster)
async def create_cluster(body: CreateClusterRequest, gw: GatewayDep, ns: NamespaceDep) -> dict:
    check_algorithm(body.clustering_method, body.algorithm_params)
    check_preprocessing(body.preprocessing_steps)
    check_filters(body.filters)

    found = [await gw.repo.get_collection(ns, cid) for cid in body.collection_ids]
    missing = [cid for cid, c in zip(body.collection_ids, found) if c is None]
    if missing:
        raise ApiError(404, f"Collection not found: {', '.join(missing)}",
                       details={"resource": "collection", "id": missing[0]})
    embedding_name = _embedding_for(body.embedding_name, found)

    row = await gw.repo.create_cluster(ns, {
        "cluster_name": body.cluster_name,
        "description": body.description,
        "collection_ids": [c["collection_id"] for c in found],
        "embedding_name": embedding_name,
        "clustering_method": body.clustering_method,
        "algorithm_params": body.algorithm_params,
        # Stored as validated, with each step's defaults filled in (what will run).
        "preprocessing_steps": [step.model_dump() for step in validate_preprocessing(body.preprocessing_steps)]
        if body.preprocessing_steps else None,
        "sample_size": body.sample_size,
        "filters": body.filters.model_dump(mode="json", exclude_none=True) if body.filters else None,
        "llm_labeling": body.llm_labeling.model_dump(mode="json") if body.llm_labeling else None,
        "vis_n_components": body.vis_n_components,
        "defer_visualization": body.defer_visualization,
        "hierarchical": body.hierarchical,
        "max_hierarchy_depth": body.max_hierarchy_depth,
        "layout_stability": body.layout_stability.value,
        "metadata": body.metadata,
    })
    return row


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


@router.get("/{cluster_id}", response_model=Cluster)
async def get_cluster(cluster_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    row = await gw.repo.get_cluster(ns, cluster_id)
    if row is None:
        raise not_found("cluster", cluster_id)
    return row


@router.patch("/{cluster_id}", response_model=Cluster)
async def patch_cluster(cluster_id: str, body: PatchClusterRequest, gw: GatewayDep, ns: NamespaceDep) -> dict:
    values = body.model_dump(exclude_unset=True)
    if values.get("cluster_name", "") is None:
        raise bad_request("cluster_name cannot be null")
    if "metadata" in values and values["metadata"] is None:
        values["metadata"] = {}  # null clears it (stored as JSON null, it broke every later read)
    if values and not await gw.repo.update_cluster(ns, cluster_id, values):
        raise not_found("cluster", cluster_id)
    return await get_cluster(cluster_id, gw, ns)


@router.delete("/{cluster_id}")
async def delete_cluster(cluster_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    row = await gw.repo.get_cluster(ns, cluster_id)
    if row is None:
        raise not_found("cluster", cluster_id)
    await gw.repo.delete_cluster(ns, row["cluster_id"])
    # Artifacts go with the definition; the run history (tasks) stays readable.
    deleted = gw.store.delete_prefix(f"{ns}/{row['cluster_id']}/")
    return {"success": True, "cluster_id": row["cluster_id"], "artifacts_deleted": deleted}


@router.post("/list", response_model=ClusterList)
async def list_clusters(gw: GatewayDep, ns: NamespaceDep, body: ListClustersRequest | None = None,
                        limit: int = Query(20, ge=1, le=1000), offset: int = Query(0, ge=0)) -> ClusterList:
    body = body or ListClustersRequest()
    unknown = set(body.filters or {}) - _EXACT
    if unknown:
        raise bad_request(f"cannot filter clusters by {sorted(unknown)}; use {sorted(_EXACT)}", code="invalid_filter")
    if body.sort.field not in _SORTABLE:
        raise bad_request(f"cannot sort by {body.sort.field!r}; use one of {sorted(_SORTABLE)}", code="invalid_sort")
    rows, total, stats = await gw.repo.list_clusters(
        ns, exact=body.filters or {}, search=body.search, sort_field=body.sort.field,
        descending=body.sort.direction == "desc", limit=limit, offset=offset,
    )
    return ClusterList(results=[Cluster.model_validate(r) for r in rows],
                       pagination=Pagination(limit=limit, offset=offset, total=total),
                       total_count=total, stats=stats)
