"""Request-scoped dependencies: the namespace, the caller, and the gateway's ports."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

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


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def namespace(x_namespace: Annotated[str | None, Header()] = None) -> str:
    value = (x_namespace or DEFAULT_NAMESPACE).strip()
    if not value or len(value) > 128 or not all(c.isalnum() or c in "-_." for c in value):
        raise ApiError(400, "X-Namespace must be 1 to 128 letters, digits, '-', '_' or '.'",
                       code="invalid_namespace")
    return value


def caller(authorization: Annotated[str | None, Header()] = None) -> str | None:
    """The key's fingerprint, recorded on runs; authentication itself comes later."""
    if not authorization:
        return None
    import hashlib

    return "key_" + hashlib.sha256(authorization.encode()).hexdigest()[:12]


GatewayDep = Annotated[Gateway, Depends(gateway)]
NamespaceDep = Annotated[str, Depends(namespace)]
CallerDep = Annotated[str | None, Depends(caller)]
