"""Collections and their documents."""
from __future__ import annotations

import math

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from contracts.api import ErrorResponse
from contracts.resources import (
    Collection,
    CreateCollectionRequest,
    Document,
    DocumentPage,
    Pagination,
    UpsertDocumentsRequest,
    UpsertDocumentsResponse,
)
from services.gateway.deps import GatewayDep, NamespaceDep
from services.gateway.errors import ApiError, not_found
from services.gateway.limits import check_document_payloads

router = APIRouter(prefix="/v1/collections", tags=["Collections"])


@router.post("", response_model=Collection, responses={409: {"model": ErrorResponse}})
async def create_collection(body: CreateCollectionRequest, gw: GatewayDep, ns: NamespaceDep) -> dict:
    existing = await gw.repo.get_collection(ns, body.collection_name)
    if existing is not None:
        raise ApiError(409, f"A collection named {body.collection_name!r} already exists",
                       code="collection_name_taken", details={"collection_id": existing["collection_id"]})
    row = await gw.repo.create_collection(ns, body.model_dump())
    return {**row, "document_count": 0}


@router.get("", response_model=dict)
async def list_collections(gw: GatewayDep, ns: NamespaceDep, limit: int = Query(50, ge=1, le=1000),
                           offset: int = Query(0, ge=0)) -> dict:
    rows, total = await gw.repo.list_collections(ns, limit, offset)
    return {"results": [Collection.model_validate(r) for r in rows],
            "pagination": Pagination(limit=limit, offset=offset, total=total)}


@router.get("/{collection_id}", response_model=Collection)
async def get_collection(collection_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    row = await gw.repo.get_collection(ns, collection_id)
    if row is None:
        raise not_found("collection", collection_id)
    return row


@router.delete("/{collection_id}")
async def delete_collection(collection_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    if not await gw.repo.delete_collection(ns, collection_id):
        raise not_found("collection", collection_id)
    return {"success": True, "collection_id": collection_id}


@router.post("/{collection_id}/documents", response_model=UpsertDocumentsResponse)
async def upsert_documents(collection_id: str, body: UpsertDocumentsRequest, gw: GatewayDep,
                           ns: NamespaceDep) -> UpsertDocumentsResponse:
    collection = await gw.repo.get_collection(ns, collection_id)
    if collection is None:
        raise not_found("collection", collection_id)
    check_document_payloads(body.documents, gw.settings.max_document_payload_bytes)
    _check_embeddings(body, collection["embeddings"])
    count = await gw.repo.upsert_documents(collection["collection_id"], body.documents)
    return UpsertDocumentsResponse(collection_id=collection["collection_id"], upserted=count)


@router.get("/{collection_id}/documents", response_model=DocumentPage)
async def list_documents(collection_id: str, gw: GatewayDep, ns: NamespaceDep,
                         limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> DocumentPage:
    collection = await gw.repo.get_collection(ns, collection_id)
    if collection is None:
        raise not_found("collection", collection_id)
    rows, total = await gw.repo.list_documents(collection["collection_id"], limit, offset)
    return DocumentPage(results=[Document.model_validate(r) for r in rows],
                        pagination=Pagination(limit=limit, offset=offset, total=total))


@router.get("/{collection_id}/documents/{document_id}", response_model=Document)
async def get_document(collection_id: str, document_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    collection = await gw.repo.get_collection(ns, collection_id)
    row = collection and await gw.repo.get_document(collection["collection_id"], document_id)
    if not row:
        raise not_found("document", document_id)
    return row


@router.delete("/{collection_id}/documents/{document_id}")
async def delete_document(collection_id: str, document_id: str, gw: GatewayDep, ns: NamespaceDep) -> dict:
    collection = await gw.repo.get_collection(ns, collection_id)
    if not collection or not await gw.repo.delete_document(collection["collection_id"], document_id):
        raise not_found("document", document_id)
    return {"success": True, "document_id": document_id}


def _check_embeddings(body: UpsertDocumentsRequest, declared: dict[str, int]) -> None:
    """Every vector must be one the collection declares, of its dimension, finite."""
    errors = []
    seen: set[str] = set()
    for i, doc in enumerate(body.documents):
        loc = ["body", "documents", i]
        if doc.document_id in seen:
            errors.append({"loc": [*loc, "document_id"], "msg": f"duplicate document_id {doc.document_id!r} in batch",
                           "type": "value_error.duplicate"})
        seen.add(doc.document_id)
        for name, values in doc.embeddings.items():
            if name not in declared:
                errors.append({"loc": [*loc, "embeddings", name],
                               "msg": f"unknown embedding {name!r}; the collection declares {sorted(declared)}",
                               "type": "value_error.unknown_embedding"})
            elif len(values) != declared[name]:
                errors.append({"loc": [*loc, "embeddings", name],
                               "msg": f"dimension mismatch: expected {declared[name]}, got {len(values)}",
                               "type": "value_error.dimension_mismatch"})
            elif not all(math.isfinite(v) for v in values):
                errors.append({"loc": [*loc, "embeddings", name], "msg": "vector holds NaN or infinity",
                               "type": "value_error.not_finite"})
        if len(errors) >= 50:
            break
    if errors:
        raise RequestValidationError(errors)
