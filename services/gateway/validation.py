"""Checks that need more than a pydantic model: the algorithm's parameters, the filter
grammar, and per-run overrides. Shared by cluster creation and execute, so a bad value
is refused the same way at either door."""
from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

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


# The knobs the hosted SDK serialises into `algorithm_params` beyond clusterflow's own
# parameters, at the SDK's defaults (mixpeek 1.3.783's *Params models). At these values
# they change nothing here; any other value names behaviour clusterflow does not have.
SDK_ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "kmeans": {"verbose": 0, "copy_x": True, "algorithm": "lloyd"},
    "dbscan": {"algorithm": "auto", "leaf_size": 30, "p": 2, "n_jobs": 1},
    "hdbscan": {"metric": "euclidean", "alpha": 1.0, "prediction_data": False,
                "match_reference_implementation": False},
    "agglomerative": {"affinity": "euclidean", "compute_full_tree": "auto", "compute_distances": False},
    "spectral": {"n_init": 10, "gamma": 1.0, "eigen_tol": 0.0, "degree": 3, "coef0": 1, "n_jobs": 1,
                 "verbose": False},
    "gaussian_mixture": {"tol": 0.001, "reg_covar": 1e-06, "max_iter": 100, "n_init": 1, "init_params": "kmeans",
                         "warm_start": False, "verbose": 0, "verbose_interval": 10},
    "mean_shift": {"bandwidth_quantile": 0.1, "min_bin_freq": 1, "cluster_all": True, "n_jobs": 1, "max_iter": 300},
    "optics": {"metric": "minkowski", "p": 2, "predecessor_correction": True, "algorithm": "auto", "leaf_size": 30,
               "n_jobs": 1},
}

# Fields of the SDK's bodies with their defaults, for things clusterflow does not do.
UNSUPPORTED_AT_DEFAULT: dict[str, Any] = {
    "vector_config.multi_feature_strategy": "concatenate",
    "vector_config.normalize_features": True,
    "vector_config.feature_weights": None,
    "vector_config.weight_learning_config": None,
    "vector_config.output_strategy": "single",
    "vector_config.effective_feature_method": "mean",
    "vector_config.enrich_source": False,
    "vector_config.face_cluster_merge": None,
    "attribute_config": None,
    "enrich_source_collection": False,
    "source_enrichment_config": None,
    "auto_execute_on_batch": False,
    "auto_execute_min_documents": None,
    "auto_execute_cooldown_seconds": 3600,
    "source_cluster_ids": None,
    "face_cluster_merge": None,
    "llm_labeling.sample_selection_strategy": "nearest",
    "llm_labeling.labeling_context": None,
    "llm_labeling.candidate_labels": None,
}


def _equal(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def check_supported(values: dict[str, Any]) -> None:
    """400 naming the first field (a dotted path of UNSUPPORTED_AT_DEFAULT) whose value
    is not the SDK's default; never a silent ignore."""
    for path, value in values.items():
        default = UNSUPPORTED_AT_DEFAULT[path]
        if value is not None and not _equal(value, default) and not (value == [] and default is None):
            raise bad_request(f"{path}={value!r} is not supported by clusterflow (only {default!r}); "
                              "leave it out", code="unsupported_field", field=path)


def strip_sdk_knobs(method: str, params: dict[str, Any], loc: str) -> dict[str, Any]:
    """`params` without the SDK's extra knobs at their defaults; 400 naming a knob set
    to anything else."""
    known = SDK_ALGORITHM_DEFAULTS.get(method, {})
    kept = {}
    for key, value in params.items():
        if key in known:
            if not _equal(value, known[key]) and not (isinstance(value, (int, float)) and value == known[key]):
                raise bad_request(f"{loc}.{key}={value!r} is not supported by clusterflow's {method} (only "
                                  f"{known[key]!r}); leave it out", code="unsupported_field", field=f"{loc}.{key}")
            continue
        kept[key] = value
    return kept


def llm_labeling_fields(llm: Any) -> dict[str, Any]:
    if llm is None:
        return {}
    return {f"llm_labeling.{k}": llm.hosted_key(k) for k in ("sample_selection_strategy", "labeling_context",
                                                              "candidate_labels")}


def parse_filters(raw: dict[str, Any], loc: tuple[str, ...] = ("body", "filters")) -> LogicalOperator:
    """A LogicalOperator from a body's free-form `filters` (the list bodies take either
    shape), a 422 naming the problem when it is not one."""
    try:
        return LogicalOperator.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": [*loc, *e["loc"]]} for e in exc.errors(include_url=False,
                                                                                        include_context=False)])
