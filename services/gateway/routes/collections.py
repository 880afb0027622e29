"""Collections and their documents: upserts in JSON batches, bulk imports of parquet."""
from __future__ import annotations

import math
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from clusterflow.imports import ImportFileError, looks_like_parquet, plan_columns
from clusterflow.storage import artifact_key
from contracts.api import ErrorResponse, TaskResponse, TaskStatusEnum, TaskType
from contracts.events import IMPORT_MODE, ImportRequested, new_import_id, new_task_id
from contracts.resources import (
    BYOUpsertRequest,
    BYOUpsertResponse,
    Collection,
    CreateCollectionRequest,
    Document,
    DocumentIn,
    DocumentPage,
    ImportDocumentsRequest,
    Pagination,
    UpsertDocumentsRequest,
    UpsertDocumentsResponse,
    unknown_keys,
)
from contracts.topics import IMPORT_REQUESTED
from services.gateway.deps import CallerDep, GatewayDep, NamespaceDep
from services.gateway.errors import ApiError, bad_request, not_found
from services.gateway.limits import check_document_payloads
from services.gateway.queueing import enqueue

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
            "pagination": Pagination.of(limit, offset, total)}


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
                        pagination=Pagination.of(limit, offset, total))


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


# --- bulk import -------------------------------------------------------------------------

PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet", "application/octet-stream")


@router.post("/{collection_id}/documents/import", response_model=TaskResponse,
             responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                        415: {"model": ErrorResponse}},
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/ImportDocumentsRequest"}},
                 "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}}})
async def import_documents(
    collection_id: str, request: Request, gw: GatewayDep, ns: NamespaceDep, who: CallerDep,
    id_column: str = Query("document_id", min_length=1, max_length=256,
                           description="Upload only (JSON bodies carry it): the id column."),
    embedding_column: list[str] | None = Query(None, description="Upload only: `name=column`, once per embedding."),
    payload_column: list[str] | None = Query(None, description="Upload only: a payload column (repeat it)."),
) -> TaskResponse:
    """Load a parquet file of documents (an id column, embedding columns, payload
    columns) into the collection, as a task polled like any other
    (`GET /v1/tasks/{task_id}`; `additional_data.import` holds the result, refused rows
    by row number). Send the file as the body (`Content-Type:
    application/vnd.apache.parquet`), streamed and never held in memory, or name a file
    already in the bucket under your namespace's prefix (JSON `ImportDocumentsRequest`).
    Rows with a missing or duplicate id, or a vector that is missing, of the wrong
    dimension or not finite are refused; the others are imported, in one transaction."""
    collection = await gw.repo.get_collection(ns, collection_id)
    if collection is None:
        raise not_found("collection", collection_id)
    collection_id = collection["collection_id"]
    import_id, task_id = new_import_id(), new_task_id()
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = ImportDocumentsRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        if not body.s3_key.startswith(f"{ns}/"):
            raise bad_request(f"s3_key must be under your namespace's prefix {ns + '/'!r}", code="key_outside_namespace")
        head, tail = await run_in_threadpool(gw.store.ends, body.s3_key)
        spec = dict(source_key=body.s3_key, staged=False, id_column=body.id_column,
                    embedding_columns=body.embedding_columns, payload_columns=body.payload_columns)
        if head is None:
            raise not_found("file", body.s3_key)
        if not looks_like_parquet(head, tail):
            raise bad_request(f"{body.s3_key} is not a parquet file", code="not_parquet")
    elif content_type in PARQUET_TYPES:
        mapping = _pairs(embedding_column)
        key = artifact_key(ns, collection_id, import_id, "upload")
        with tempfile.TemporaryDirectory(prefix="gateway-import-") as tmp:
            path = os.path.join(tmp, "upload.parquet")
            with open(path, "wb") as f:
                async for chunk in request.stream():
                    await run_in_threadpool(f.write, chunk)
            try:
                await run_in_threadpool(_check_upload, path, collection["embeddings"], id_column, mapping,
                                        payload_column)
            except ImportFileError as exc:
                raise bad_request(f"the file cannot be imported: {exc}", code="bad_import_file") from exc
            await run_in_threadpool(gw.store.upload, key, path)
        spec = dict(source_key=key, staged=True, id_column=id_column, embedding_columns=mapping,
                    payload_columns=payload_column)
    else:
        raise ApiError(415, "send the parquet file as the body with Content-Type application/vnd.apache.parquet, "
                       "or JSON naming a file in the bucket", code="unsupported_media_type",
                       details={"content_type": content_type or None})
    event = ImportRequested(namespace=ns, run_id=import_id, cluster_id=collection_id, task_id=task_id,
                            collection_id=collection_id, requested_by=who, **spec)
    await enqueue(gw, IMPORT_REQUESTED, event, {"mode": IMPORT_MODE, **spec})
    return TaskResponse(task_id=task_id, task_type=TaskType.api_collections_documents_create,
                        status=TaskStatusEnum.PENDING,
                        additional_data={"collection_id": collection_id, "import_id": import_id, "namespace_id": ns,
                                         "progress": 0.0, "mode": IMPORT_MODE})


def _pairs(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for value in values:
        name, sep, column = value.partition("=")
        if not sep or not name or not column:
            raise bad_request(f"embedding_column {value!r} must read name=column", code="bad_embedding_column")
        out[name] = column
    return out


def _check_upload(path: str, embeddings: dict[str, int], id_column: str, mapping: dict[str, str] | None,
                  payload_columns: list[str] | None) -> None:
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, os.path.getsize(path) - 4))
        tail = f.read(4)
    if not looks_like_parquet(head, tail):
        raise ImportFileError("it is not a parquet file (no PAR1 at its start and end)")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ImportFileError(f"it is not a readable parquet file ({exc})") from exc
    plan_columns(schema, embeddings, id_column=id_column, embedding_columns=mapping, payload_columns=payload_columns)


# --- the hosted SDK's bring-your-own documents ---------------------------------------------

namespaces_router = APIRouter(prefix="/v1/namespaces", tags=["Collections"])


@namespaces_router.post("/{namespace_id}/documents/upsert", response_model=BYOUpsertResponse,
                        responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def upsert_byo_documents(namespace_id: str, body: BYOUpsertRequest, gw: GatewayDep,
                               ns: NamespaceDep) -> BYOUpsertResponse:
    """The hosted SDK's `upsert_documents_byo_namespaces`: the same batch upsert as
    `POST /v1/collections/{id}/documents`, with `vectors` for `embeddings`. The path's
    namespace must be the request's (another one is a 404, as for any resource)."""
    if namespace_id != ns:
        raise not_found("namespace", namespace_id)
    if body.collection_id is None:
        found, total = await gw.repo.list_collections(ns, limit=2, offset=0)
        if total != 1:
            raise bad_request(f"collection_id is required: namespace {ns!r} has {total} collections",
                              code="collection_id_required")
        collection_id = found[0]["collection_id"]
    else:
        collection_id = body.collection_id
    docs = UpsertDocumentsRequest(documents=[
        DocumentIn(document_id=d.document_id, embeddings=d.vectors,
                   payload={**d.payload, **({"metadata": d.metadata} if d.metadata is not None else {})})
        for d in body.documents])
    done = await upsert_documents(collection_id, docs, gw, ns)
    return BYOUpsertResponse(inserted=done.upserted, document_ids=[d.document_id for d in body.documents],
                             collection_id=done.collection_id, warnings=unknown_keys(body))
