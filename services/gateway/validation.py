"""Checks that need more than a pydantic model: the algorithm's parameters, the filter
grammar, and per-run overrides. Shared by cluster creation and execute, so a bad value
is refused the same way at either door."""
from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

from clusterflow.filters import FilterError, validate_filter
from contracts.api import MAX_FILTER_DEPTH, LogicalOperator
from contracts.engine_params import validate_params, validate_preprocessing
from services.gateway.errors import bad_request


def check_algorithm(method: str, params: dict[str, Any], loc: tuple[str, ...] = ("body",)) -> None:
    """422 naming the parameter and the allowed range, never a failure deep inside the clusterer."""
    try:
        validate_params(method, params)
    except ValueError as exc:
        field = "clustering_method" if "method" in str(exc).split(":")[0] else "algorithm_params"
        raise RequestValidationError(
            [{"loc": [*loc, field], "msg": str(exc), "type": "value_error"}]
        ) from exc


def check_preprocessing(steps: list[Any] | None, loc: tuple[str, ...] = ("body",)) -> None:
    """422 naming the step, its field and the allowed values."""
    try:
        validate_preprocessing(steps)
    except ValueError as exc:
        raise RequestValidationError(
            [{"loc": [*loc, "preprocessing_steps"], "msg": str(exc), "type": "value_error"}]
        ) from exc


def check_filters(filters: LogicalOperator | None) -> None:
    if filters is None:
        return
    if filters.depth() > MAX_FILTER_DEPTH:
        raise bad_request(
            f"filters nest {filters.depth()} levels deep; at most {MAX_FILTER_DEPTH} are allowed",
            code="filter_too_deep",
        )
    try:
        validate_filter(filters)
    except FilterError as exc:
        raise bad_request(f"filters cannot be applied: {exc}", code="invalid_filter") from exc
