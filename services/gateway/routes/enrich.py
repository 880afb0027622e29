"""POST /v1/clusters/enrich: write runs' cluster assignments onto documents' payloads.

Synchronous, as the hosted API answers with the counts. The documents are updated in
batches of `batch_size` (one transaction each, `parallelism` at a time) with a JSONB
merge, in place or into copies in `target_collection_id`; the keys written are listed
in `services/gateway/enrichment.py`. Re-running the same call writes the same values.
"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from contracts.api import COMPLETED_STATUSES, ErrorResponse
from contracts.resources import EnrichRequest, EnrichResponse
from services.gateway import enrichment
from services.gateway.deps import GatewayDep, NamespaceDep
from services.gateway.errors import ApiError, bad_request

router = APIRouter(tags=["Clusters"])

_MEMBER_COLUMNS = ["document_id", "cluster_id", "distance_to_centroid"]
_MAX_ERRORS = 5


@router.post("/v1/clusters/enrich", response_model=EnrichResponse,
             responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def enrich(body: EnrichRequest, gw: GatewayDep, ns: NamespaceDep) -> EnrichResponse:
    source = await gw.repo.get_collection(ns, body.source_collection_id)
    if source is None:
        raise ApiError(404, f"Collection not found: {body.source_collection_id}",
                       details={"resource": "collection", "id": body.source_collection_id})
    target, names = None, []
    if body.target_collection_id is not None:
        target = await gw.repo.get_collection(ns, body.target_collection_id)
        if target is None:
            raise ApiError(404, f"Collection not found: {body.target_collection_id}",
                           details={"resource": "collection", "id": body.target_collection_id})
        if target["collection_id"] == source["collection_id"]:
            target = None  # the same collection: in place
        else:
            names = sorted(n for n, d in source["embeddings"].items() if target["embeddings"].get(n) == d)
            if not names:
                raise bad_request(
                    f"collection {target['collection_id']} declares none of the source's embeddings "
                    f"{source['embeddings']} with the same dimension: the documents' vectors cannot be copied",
                    code="incompatible_collections")

    runs = []
    for run_id in dict.fromkeys(body.clustering_ids):
        run = await gw.repo.get_run(ns, run_id)
        if run is None:
            raise ApiError(404, f"Execution not found: {run_id}", details={"resource": "execution", "id": run_id})
        if run["status"] not in COMPLETED_STATUSES or not run.get("artifacts"):
            raise bad_request(f"run {run_id} has no results to write (status {run['status']})",
                              code="results_not_ready", clustering_id=run_id, status=run["status"])
        runs.append(run)
    frame = await run_in_threadpool(_assignments, gw.store, runs)

    semaphore = asyncio.Semaphore(body.parallelism)
    errors: list[str] = []

    async def write(rows: dict) -> int:
        async with semaphore:
            try:
                return await gw.repo.enrich_batch(source["collection_id"], target and target["collection_id"],
                                                  rows, names)
            except Exception as exc:  # noqa: BLE001 - one failed batch is counted, the rest go on
                if len(errors) < _MAX_ERRORS:
                    errors.append(f"{type(exc).__name__}: {exc}"[:500])
                return 0

    parts = list(enrichment.batches(frame, body.batch_size))
    written = await asyncio.gather(*(write(rows) for rows in parts))
    enriched = sum(written)
    return EnrichResponse(processed=frame.height, enriched=enriched, failed=frame.height - enriched,
                          batches=len(parts), errors=errors)


def _assignments(store, runs: list[dict]):
    return enrichment.assignments(
        [(run, store.get_parquet(run["artifacts"]["members_key"], columns=_MEMBER_COLUMNS)) for run in runs])
