"""Size limits on what clients send: request bodies and document payloads.

`BodyLimitMiddleware` refuses a request whose body is larger than
`settings.max_body_bytes` with 413, before the body is read whole: at once when
Content-Length says so, else (a chunked body, or a Content-Length that lies) as soon
as the bytes received pass the limit, counted chunk by chunk as the app reads them.
Both answers are in the `ErrorResponse` shape.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.errors import ApiError, error_response


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the limit. FastAPI re-raises
    an HTTPException met while reading a body, and the gateway's handler renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"The request body is larger than the limit of {limit} bytes")


def _too_large(limit: int, length: int | None = None):
    details: dict[str, Any] = {"limit_bytes": limit}
    if length is not None:
        details["content_length"] = length
    return error_response(413, f"The request body is larger than the limit of {limit} bytes",
                          code="body_too_large", details=details)


class BodyLimitMiddleware:
    """`max_bytes` for every body, but a file upload (`POST .../documents/import`, which
    the route streams to disk, never holding it whole) may take `max_upload_bytes`."""

    UPLOAD_SUFFIX = "/documents/import"

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if scope.get("path", "").endswith(self.UPLOAD_SUFFIX) else self.max_bytes
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
                if length is not None and length > limit:
                    await _too_large(limit, length)(scope, receive, send)
                    return
                break

        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def check_document_payloads(documents: list[Any], limit: int) -> None:
    """413 when a document's payload, as compact JSON, is larger than `limit` bytes."""
    for index, doc in enumerate(documents):
        payload = getattr(doc, "payload", None)
        if not payload:
            continue
        size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
        if size > limit:
            raise ApiError(413, f"Document {doc.document_id!r} has a payload of {size} bytes; the limit is "
                           f"{limit} bytes", code="document_too_large",
                           details={"document_id": doc.document_id, "index": index, "payload_bytes": size,
                                    "limit_bytes": limit})
