"""Request-scoped dependencies: the namespace, the caller, and the gateway's ports."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import HTTPBearer

from clusterflow.keys import ApiKey, KeyStore, valid_namespace
from clusterflow.messaging import Publisher
from clusterflow.settings import Settings
from clusterflow.storage import ObjectStore
from services.gateway.errors import ApiError
from services.gateway.repository import GatewayRepository

DEFAULT_NAMESPACE = "default"


@dataclass
class Gateway:
    """The composition the routes work with (built once in `app.bootstrap`)."""

    settings: Settings
    repo: GatewayRepository
    publisher: Publisher
    store: ObjectStore
    keys: KeyStore | None = None


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


# Declares the scheme in the OpenAPI document; the header is parsed below, so that a
# missing or malformed one gets the ErrorResponse shape rather than FastAPI's default.
_bearer = HTTPBearer(auto_error=False, description="An API key: `python -m clusterflow.keys create "
                     "--namespace NS` prints one.")


def _unauthorized(message: str, code: str) -> ApiError:
    return ApiError(401, message, code=code)


async def authenticate(request: Request, authorization: str | None) -> ApiKey | None:
    """The caller's key, or a 401. None when authentication is turned off."""
    gw: Gateway = request.app.state.gateway
    # Read as an attribute on purpose: a gateway built without settings fails the
    # request rather than serving it unauthenticated.
    if not gw.settings.auth_required:
        return None
    if gw.keys is None:  # fail closed: a gateway built without its key store serves no one
        raise ApiError(503, "Authentication is not available", code="auth_unavailable")
    if not authorization:
        raise _unauthorized("An API key is required: send Authorization: Bearer <key>", "missing_api_key")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("Authorization must be 'Bearer <key>'", "invalid_authorization")
    key = await gw.keys.verify(token)
    if key is None:
        raise _unauthorized("The API key is not valid (unknown, malformed or revoked)", "invalid_api_key")
    return key


async def namespace(
    request: Request,
    x_namespace: Annotated[str | None, Header(description="The namespace to work in; a key scoped to one "
                                                          "namespace may leave it out.")] = None,
    _credentials: Annotated[object, Security(_bearer)] = None,
) -> str:
    """The request's namespace, once its caller is authenticated and allowed to use it.

    Every route takes it, so every route but /health and /ready is authenticated: 401
    without a valid key, 403 for a namespace the key does not cover. A request without
    X-Namespace uses the key's namespace when the key has exactly one, else "default".
    """
    key = await authenticate(request, request.headers.get("authorization"))
    request.state.api_key = key
    raw = x_namespace if x_namespace is not None else (key.only_namespace if key else None)
    value = (raw or DEFAULT_NAMESPACE).strip()
    if not valid_namespace(value):
        raise ApiError(400, "X-Namespace must be 1 to 128 letters, digits, '-', '_' or '.'",
                       code="invalid_namespace")
    if key is not None and not key.allows(value):
        raise ApiError(403, f"This API key may not use the namespace {value!r}", code="namespace_forbidden",
                       details={"namespace": value, "key_id": key.key_id})
    return value


def caller(request: Request, _ns: Annotated[str, Depends(namespace)]) -> str | None:
    """Who asked (recorded on runs): the key's id, never the key."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is not None:
        return key.key_id
    authorization = request.headers.get("authorization")
    if not authorization:
        return None
    import hashlib

    return "key_" + hashlib.sha256(authorization.encode()).hexdigest()[:12]


GatewayDep = Annotated[Gateway, Depends(gateway)]
NamespaceDep = Annotated[str, Depends(namespace)]
CallerDep = Annotated[str | None, Depends(caller)]


@dataclass
class Page:
    """Where a list answer starts and how long it is."""

    limit: int
    offset: int

    def over(self, body: object) -> Page:
        """The body's paging (the SDK's list bodies carry limit/page_size/offset/page)
        where the query string gave none."""
        if self.given:
            return self
        size = getattr(body, "limit", None) or getattr(body, "page_size", None) or self.limit
        offset = getattr(body, "offset", None)
        page = getattr(body, "page", None)
        return Page(size, offset if offset is not None else (page - 1) * size if page else self.offset)

    given: bool = False


def paging(
    limit: Annotated[int | None, Query(ge=1, le=1000, description="Page length (default 20).")] = None,
    page_size: Annotated[int | None, Query(ge=1, le=1000, description="Same as limit.")] = None,
    offset: Annotated[int | None, Query(ge=0, le=2_147_483_647)] = None,
    page: Annotated[int | None, Query(ge=1, le=2_147_483_647, description="1-based page number.")] = None,
    cursor: Annotated[str | None, Query(max_length=32, description="A pagination's next_cursor.")] = None,
    next_cursor: Annotated[str | None, Query(max_length=32, description="Same as cursor.")] = None,
    after: Annotated[str | None, Query(max_length=32, description="Same as cursor.")] = None,
    include_total: Annotated[bool, Query(description="Totals are always counted.")] = True,
) -> Page:
    """The hosted API's paging parameters, all of them honoured: an explicit offset
    wins, then a cursor, then a page number."""
    size = limit or page_size or 20
    token = cursor or next_cursor or after
    if offset is None and token is not None:
        if not token.isdigit():
            raise ApiError(400, f"cursor {token!r} is not one this API issued (a pagination's next_cursor)",
                           code="invalid_cursor")
        offset = int(token)
    if offset is None and page is not None:
        offset = (page - 1) * size
    given = any(v is not None for v in (limit, page_size, offset, page))
    return Page(size, offset or 0, given)


PageDep = Annotated[Page, Depends(paging)]
