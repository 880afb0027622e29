"""Errors in the reference's `ErrorResponse` shape, and the handlers that render them.

422 is FastAPI's `HTTPValidationError` (`{"detail": [{loc, msg, type}]}`), as the
reference documents, and carries `success`, `status` and `error` beside it, so that a
client parsing every error as `ErrorResponse` (the hosted SDK does) reads it too;
everything else is `{success: false, status, error: {...}}`.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from asyncpg.exceptions import DataError as PostgresDataError
from asyncpg.exceptions._base import DataError as ArgumentDataError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from clusterflow.filters import ColumnFilterError, FilterError
from contracts.api import ErrorDetail, ErrorResponse

log = logging.getLogger("clusterflow.gateway")

_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    409: "ConflictError",
    413: "PayloadTooLargeError",
    415: "UnsupportedMediaTypeError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.details = details
        self.type = type_ or _TYPES.get(status, "Error")


def not_found(resource: str, id_: str) -> ApiError:
    return ApiError(404, f"{resource.capitalize()} not found", details={"resource": resource, "id": id_})


def bad_request(message: str, *, code: str | None = None, **details: Any) -> ApiError:
    return ApiError(400, message, code=code, details=details or None)


def error_response(status: int, message: str, *, type_: str | None = None, code: str | None = None,
                   details: dict[str, Any] | None = None) -> JSONResponse:
    body = ErrorResponse(
        status=status,
        error=ErrorDetail(message=message, type=type_ or _TYPES.get(status, "Error"), code=code, details=details),
    )
    return JSONResponse(status_code=status, content=jsonable_encoder(body))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, type_=exc.type, code=exc.code, details=exc.details)

    @app.exception_handler(FilterError)
    async def _filter_error(_: Request, exc: FilterError) -> JSONResponse:
        # a list's `filters` (or `search`) it cannot apply: the field, and what it allows
        details = {"field": exc.field, "allowed": exc.allowed} if isinstance(exc, ColumnFilterError) else None
        return error_response(400, f"filters cannot be applied: {exc}", code="invalid_filter", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "value_error")}
            for e in exc.errors()
        ]
        detail = jsonable_encoder(detail)
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        if len(detail) > 1:
            message += f" (and {len(detail) - 1} more)"
        error = ErrorDetail(message=message, type="ValidationError", code="validation_error",
                            details={"errors": detail})
        return JSONResponse(status_code=422, content={"detail": detail, "success": False, "status": 422,
                                                      "error": jsonable_encoder(error)})

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        cause = _driver_error(exc)
        if isinstance(cause, _DATA_ERRORS):
            # A value PostgreSQL cannot hold or compare (a NUL character in text or JSON, a
            # number out of range): the client's input, not a server fault. Nothing was stored.
            return error_response(400, f"A value in the request cannot be stored or compared: {_first_line(cause)}",
                                  code="invalid_value")
        log.exception("database error")
        return error_response(500, "Internal server error", details={"error_type": type(cause).__name__})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "Internal server error", details={"error_type": type(exc).__name__})


# Server side (SQLSTATE class 22: data exception) and client side (a query argument
# asyncpg cannot encode, e.g. an integer past int64).
_DATA_ERRORS = (PostgresDataError, ArgumentDataError)


def _driver_error(exc: DBAPIError) -> BaseException:
    """The asyncpg exception under SQLAlchemy's and its adapter's wrappers."""
    seen: BaseException = exc.orig if exc.orig is not None else exc
    while seen.__cause__ is not None and not isinstance(seen, _DATA_ERRORS):
        seen = seen.__cause__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
