"""Unit tests for contracts/api.py against the reference contract.

The example objects below are transcribed from execute-clustering-api.md (the schema
`examples`, the property `examples`/`example` values and the docstring examples).
The `description` key of an example object is documentation, not data, and is
stripped before validating.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from contracts.api import (
    ACTIVE_STATUSES,
    MAX_FILTER_DEPTH,
    TERMINAL_STATUSES,
    AnthropicModel,
    DynamicValue,
    ErrorDetail,
    ErrorResponse,
    ExecuteClusterByIdRequest,
    ExecutionMode,
    FilterCondition,
    FilterOperator,
    GoogleModel,
    HTTPValidationError,
    InputMapping,
    InputSourceType,
    LLMLabeling,
    LLMLabelingInput,
    LLMProvider,
    LogicalOperator,
    OpenAIModel,
    TaskResponse,
    TaskStatusEnum,
    TaskType,
    ValidationErrorModel,
    provider_for_model,
    resolve_google_model,
)


def strip_description(example: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in example.items() if k != "description"}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's own JSON schema (a recursive model's top level is only a $ref)."""
    schema = model.model_json_schema()
    if "$ref" in schema:
        schema = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def rejection(model: type[BaseModel], data: dict[str, Any]) -> str:
    """Validate `data`, expect a failure, return pydantic's message text."""
    with pytest.raises(ValidationError) as excinfo:
        model.model_validate(data)
    return str(excinfo.value)


# ------------------------------------------------------------------ schema shape

# (model, properties, required) as the reference lists them (and the hosted SDK's
# additions, hosted-sdk-notes.md).
SCHEMAS = [
    (
        ExecuteClusterByIdRequest,
        {
            "mode",
            "source_execution_ids",
            "assignment_threshold",
            "filters",
            "sample_size",
            "vis_n_components",
            "defer_visualization",
            "llm_labeling",
            # departure: the hosted SDK's cluster-config fields, as per-run overrides
            "hierarchical",
            "max_hierarchy_depth",
            "layout_stability",  # the hosted SDK's
        },
        set(),
    ),
    (
        TaskResponse,
        {
            "task_id",
            "task_type",
            "status",
            "inputs",
            "outputs",
            "additional_data",
            "error",
            "queue_position",
            "estimated_wait_minutes",
        },
        {"task_id", "task_type", "status"},
    ),
    (ErrorResponse, {"success", "status", "error"}, {"status", "error"}),
    (ErrorDetail, {"message", "type", "code", "details"}, {"message", "type"}),
    (HTTPValidationError, {"detail"}, set()),
    (ValidationErrorModel, {"loc", "msg", "type"}, {"loc", "msg", "type"}),
    (LogicalOperator, {"AND", "OR", "NOT", "case_sensitive"}, set()),
    (
        LLMLabeling,
        {
            "enabled",
            "labeling_inputs",
            "provider",
            "model_name",
            "include_summary",
            "include_keywords",
            "max_samples_per_cluster",
            "sample_text_max_length",
            "use_embedding_dedup",
            "embedding_similarity_threshold",
            "cache_ttl_seconds",
            "custom_prompt",
            "response_shape",
            "parameters",
        },
        set(),
    ),
    (FilterCondition, {"field", "operator", "value"}, {"field", "value"}),
    (LLMLabelingInput, {"input_mappings"}, {"input_mappings"}),
    (DynamicValue, {"type", "field"}, {"field"}),
    (InputMapping, {"input_key", "source_type", "path", "override"}, {"input_key"}),
]


@pytest.mark.parametrize(
    ("model", "properties", "required"), SCHEMAS, ids=[s[0].__name__ for s in SCHEMAS]
)
def test_schema_properties_and_required_match_reference(model, properties, required):
    schema = model_schema(model)
    assert set(schema["properties"]) == properties
    assert set(schema.get("required", [])) == required


@pytest.mark.parametrize(
    ("model", "title"),
    [
        (ValidationErrorModel, "ValidationError"),
        (ExecuteClusterByIdRequest, "ExecuteClusterByIdRequest"),
        (LogicalOperator, "LogicalOperator"),
        (LLMLabeling, "LLMLabeling"),
        (LLMLabelingInput, "LLMLabelingInput"),
    ],
)
def test_schema_titles(model, title):
    assert model_schema(model)["title"] == title


@pytest.mark.parametrize(
    ("model", "additional"),
    [
        (ExecuteClusterByIdRequest, False),
        (LLMLabeling, False),
        (LLMLabelingInput, False),
        (InputMapping, False),
        (FilterCondition, False),
        (LogicalOperator, True),  # shorthand keys
    ],
)
def test_additional_properties(model, additional):
    assert model_schema(model)["additionalProperties"] is additional


def test_overlapping_unions_render_as_any_of():
    # oneOf would be wrong: a DynamicValue also matches {}, a condition a LogicalOperator.
    schema = ExecuteClusterByIdRequest.model_json_schema()
    text = json.dumps(schema)
    assert "oneOf" not in text
    value = schema["$defs"]["FilterCondition"]["properties"]["value"]
    assert value["anyOf"] == [{"$ref": "#/$defs/DynamicValue"}, {}]
    and_items = schema["$defs"]["LogicalOperator"]["properties"]["AND"]["anyOf"][0]
    assert and_items["items"]["anyOf"] == [
        {"$ref": "#/$defs/LogicalOperator"},
        {"$ref": "#/$defs/FilterCondition"},
    ]


# ------------------------------------------------------------------------- enums

ENUMS = [
    (ExecutionMode, ["full", "assign", "composite"]),
    (
        TaskType,
        [
            "api_namespaces_create",
            "api_namespaces_delete",
            "api_namespaces_snapshot_create",
            "api_namespaces_snapshot_restore",
            "api_namespaces_migrations_run",
            "api_buckets_objects_create",
            "api_buckets_delete",
            "api_buckets_batches_process",
            "api_buckets_batches_submit",
            "api_buckets_uploads_create",
            "api_buckets_uploads_confirm",
            "api_buckets_uploads_batch_confirm",
            "api_collections_documents_create",
            "api_collections_extraction_artifacts",
            "api_taxonomies_create",
            "api_taxonomies_execute",
            "api_taxonomies_materialize",
            "api_evaluations_run",
            "api_evaluations_dataset_create",
            "api_retrievers_publish",
            "api_collections_export",
            "api_collections_trigger",
            "engine_feature_extractor_run",
            "engine_inference_run",
            "engine_object_processing",
            "engine_cluster_build",
            "thumbnail",
            "video_segment",
            "audio_segment",
            "converted_video",
            "materialize",
            "plugin_custom",
            "model_custom",
        ],
    ),
    (
        TaskStatusEnum,
        [
            "PENDING",
            "QUEUED",
            "IN_PROGRESS",
            "PROCESSING",
            "COMPLETED",
            "COMPLETED_WITH_ERRORS",
            "FAILED",
            "CANCELED",
            "INTERRUPTED",
            "UNKNOWN",
            "SKIPPED",
            "DRAFT",
            "ACTIVE",
            "ARCHIVED",
            "SUSPENDED",
        ],
    ),
    (
        FilterOperator,
        [
            "eq",
            "ne",
            "gt",
            "lt",
            "gte",
            "lte",
            "in",
            "nin",
            "contains",
            "starts_with",
            "ends_with",
            "regex",
            "exists",
            "is_null",
            "text",
            "phrase",
        ],
    ),
    (InputSourceType, ["payload", "literal", "vector", "blob"]),
    (LLMProvider, ["openai", "google", "anthropic"]),
    (
        OpenAIModel,
        [
            "gpt-4o-2024-08-06",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-2025-04-14",
            "gpt-4.1-mini-2025-04-14",
            "o3-mini-2025-01-31",
        ],
    ),
    (
        GoogleModel,
        [
            "gemini-2.5-flash-lite",
            "gemini-2.5-flash",
            "gemini-2.5-pro",
            "gemini-3.1-flash-lite",
        ],
    ),
    (
        AnthropicModel,
        [
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5-20251001",
            "claude-3-5-sonnet-20241022",
            "claude-3-5-haiku-20241022",
        ],
    ),
]


# Current model ids clusterflow adds after the reference's (issue 16: the reference's
# enums name retired models; the labeler maps those to these at runtime).
ADDED = {"OpenAIModel": ["gpt-5.5"], "AnthropicModel": ["claude-sonnet-4-6", "claude-opus-4-7"]}


@pytest.mark.parametrize(("enum", "values"), ENUMS, ids=[e[0].__name__ for e in ENUMS])
def test_enum_values_match_reference_in_order(enum, values):
    assert [member.value for member in enum] == values + ADDED.get(enum.__name__, [])


@pytest.mark.parametrize(("enum", "values"), ENUMS, ids=[e[0].__name__ for e in ENUMS])
def test_enum_members_are_strings_that_print_as_their_value(enum, values):
    for member in enum:
        assert isinstance(member, str)
        assert str(member) == member.value
        assert f"{member}" == member.value


def test_execution_mode_member_names():
    # contracts/events.py relies on these names.
    assert ExecutionMode.full.value == "full"
    assert ExecutionMode.assign.value == "assign"
    assert ExecutionMode.composite.value == "composite"
    assert FilterOperator.in_.value == "in"


def test_terminal_and_active_statuses():
    assert TERMINAL_STATUSES == {
        TaskStatusEnum.COMPLETED,
        TaskStatusEnum.COMPLETED_WITH_ERRORS,
        TaskStatusEnum.FAILED,
        TaskStatusEnum.CANCELED,
    }
    assert ACTIVE_STATUSES == {
        TaskStatusEnum.PENDING,
        TaskStatusEnum.QUEUED,
        TaskStatusEnum.IN_PROGRESS,
        TaskStatusEnum.PROCESSING,
    }
    assert isinstance(TERMINAL_STATUSES, frozenset)
    assert isinstance(ACTIVE_STATUSES, frozenset)
    assert not TERMINAL_STATUSES & ACTIVE_STATUSES
    assert "COMPLETED" in TERMINAL_STATUSES  # str enums compare equal to their values


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (ExecuteClusterByIdRequest, {"mode": "incremental"}, "mode"),
        (ExecuteClusterByIdRequest, {"mode": "FULL"}, "mode"),
        (FilterCondition, {"field": "a", "operator": "like", "value": 1}, "operator"),
        (FilterCondition, {"field": "a", "operator": "==", "value": 1}, "operator"),
        (LLMLabeling, {"provider": "mistral"}, "provider"),
        (LLMLabeling, {"provider": "OpenAI"}, "provider"),
        (LLMLabeling, {"model_name": "gpt-5"}, "model_name"),
        (LLMLabeling, {"model_name": "gpt-4o"}, "model_name"),
        # Named in the provider's description text but absent from GoogleModel.
        (LLMLabeling, {"model_name": "gemini-1.5-flash"}, "model_name"),
        (LLMLabeling, {"model_name": "claude-3-opus-20240229"}, "model_name"),
        (InputMapping, {"input_key": "k", "source_type": "file"}, "source_type"),
        (
            TaskResponse,
            {"task_id": "t", "task_type": "engine_cluster_build", "status": "DONE"},
            "status",
        ),
        (
            TaskResponse,
            {"task_id": "t", "task_type": "engine_cluster_build", "status": "completed"},
            "status",
        ),
        (
            TaskResponse,
            {"task_id": "t", "task_type": "engine_cluster_run", "status": "PENDING"},
            "task_type",
        ),
    ],
)
def test_unknown_enum_values_are_rejected(model, data, field):
    message = rejection(model, data)
    assert field in message


def test_unknown_model_name_message_lists_the_valid_names():
    message = rejection(LLMLabeling, {"model_name": "gpt-5"})
    assert "unknown model_name 'gpt-5'" in message
    for family in (OpenAIModel, GoogleModel, AnthropicModel):
        for model in family:
            assert model.value in message


# ------------------------------------------------------------------------ defaults


def test_execute_request_defaults():
    request = ExecuteClusterByIdRequest()
    assert request.mode is ExecutionMode.full
    assert request.source_execution_ids is None
    assert request.assignment_threshold == 0.5
    assert request.filters is None
    assert request.sample_size is None
    assert request.vis_n_components is None
    assert request.defer_visualization is None
    assert request.llm_labeling is None


def test_execute_request_accepts_an_empty_body_and_nulls():
    nulls = {
        "source_execution_ids": None,
        "assignment_threshold": None,
        "filters": None,
        "sample_size": None,
        "vis_n_components": None,
        "defer_visualization": None,
        "llm_labeling": None,
    }
    assert ExecuteClusterByIdRequest.model_validate_json("{}") == ExecuteClusterByIdRequest()
    request = ExecuteClusterByIdRequest.model_validate(nulls)
    assert request.assignment_threshold is None


def test_execute_request_full_body_round_trips_through_json():
    body = {
        "mode": "composite",
        "source_execution_ids": ["run_a", "run_b"],
        "assignment_threshold": 0.7,
        "filters": {"AND": [{"field": "brand", "operator": "eq", "value": "acme"}]},
        "sample_size": 50_000,
        "vis_n_components": 3,
        "defer_visualization": True,
        "llm_labeling": {"enabled": True, "model_name": "gemini-2.5-flash-lite"},
    }
    request = ExecuteClusterByIdRequest.model_validate_json(json.dumps(body))
    assert request.mode is ExecutionMode.composite
    assert request.llm_labeling.provider is LLMProvider.google
    dumped = json.loads(request.model_dump_json())
    assert dumped["mode"] == "composite"
    assert dumped["llm_labeling"]["model_name"] == "gemini-2.5-flash-lite"
    assert dumped["filters"]["AND"][0] == {"field": "brand", "operator": "eq", "value": "acme"}
    assert ExecuteClusterByIdRequest.model_validate(dumped) == request


def test_llm_labeling_defaults():
    labeling = LLMLabeling()
    assert labeling.enabled is False
    assert labeling.labeling_inputs is None
    assert labeling.provider is None
    assert labeling.model_name is None
    assert labeling.include_summary is True
    assert labeling.include_keywords is True
    assert labeling.max_samples_per_cluster is None
    assert labeling.sample_text_max_length == 200
    assert labeling.use_embedding_dedup is True
    assert labeling.embedding_similarity_threshold == 0.8
    assert labeling.cache_ttl_seconds == 604800
    assert labeling.custom_prompt is None
    assert labeling.response_shape is None
    assert labeling.parameters == {}
    assert LLMLabeling().parameters is not labeling.parameters  # no shared default


def test_other_defaults():
    assert FilterCondition(field="a", value=1).operator is FilterOperator.eq
    assert LogicalOperator().case_sensitive is False
    assert DynamicValue(field="inputs.x").type == "dynamic"
    mapping = InputMapping(input_key="k")
    assert (mapping.source_type, mapping.path, mapping.override) == (None, None, None)
    error = ErrorResponse(status=404, error={"message": "m", "type": "NotFoundError"})
    assert error.success is False
    assert (error.error.code, error.error.details) == (None, None)
    assert HTTPValidationError().detail == []


# -------------------------------------------------------------------------- bounds

# (model, field, accepted bound, rejected value just outside, limit text in message)
BOUNDS = [
    (ExecuteClusterByIdRequest, "sample_size", 1_000_000, 1_000_001, "less than or equal to 1000000"),
    # Not in the schema: a sample of fewer than one document makes no sense.
    (ExecuteClusterByIdRequest, "sample_size", 1, 0, "greater than or equal to 1"),
    (ExecuteClusterByIdRequest, "sample_size", 1, -5, "greater than or equal to 1"),
    (ExecuteClusterByIdRequest, "assignment_threshold", 0, -0.01, "greater than or equal to 0"),
    (ExecuteClusterByIdRequest, "assignment_threshold", 1, 1.01, "less than or equal to 1"),
    (ExecuteClusterByIdRequest, "vis_n_components", 2, 1, "2 or 3"),
    (ExecuteClusterByIdRequest, "vis_n_components", 3, 4, "2 or 3"),
    (LLMLabeling, "max_samples_per_cluster", 1, 0, "greater than or equal to 1"),
    (LLMLabeling, "max_samples_per_cluster", 20, 21, "less than or equal to 20"),
    (LLMLabeling, "sample_text_max_length", 50, 49, "greater than or equal to 50"),
    (LLMLabeling, "sample_text_max_length", 500, 501, "less than or equal to 500"),
    (LLMLabeling, "embedding_similarity_threshold", 0.5, 0.49, "greater than or equal to 0.5"),
    (LLMLabeling, "embedding_similarity_threshold", 1, 1.01, "less than or equal to 1"),
    (LLMLabeling, "cache_ttl_seconds", 0, -1, "greater than or equal to 0"),
    (LLMLabeling, "cache_ttl_seconds", 2_592_000, 2_592_001, "less than or equal to 2592000"),
]


@pytest.mark.parametrize(
    ("model", "field", "bound", "outside", "limit"),
    BOUNDS,
    ids=[f"{b[1]}={b[3]}" for b in BOUNDS],
)
def test_bound_is_accepted_and_just_outside_is_rejected(model, field, bound, outside, limit):
    assert getattr(model.model_validate({field: bound}), field) == bound
    message = rejection(model, {field: outside})
    assert field in message
    assert limit in message


@pytest.mark.parametrize(
    ("field", "outside", "limit"),
    [
        ("max_samples_per_cluster", 21, "less than or equal to 20"),
        ("sample_text_max_length", 49, "greater than or equal to 50"),
        ("embedding_similarity_threshold", 0.3, "greater than or equal to 0.5"),
        ("cache_ttl_seconds", 2_592_001, "less than or equal to 2592000"),
    ],
)
def test_nested_labeling_bounds_name_the_full_path(field, outside, limit):
    message = rejection(ExecuteClusterByIdRequest, {"llm_labeling": {field: outside}})
    assert f"llm_labeling.{field}" in message
    assert limit in message


@pytest.mark.parametrize("value", [2.5, "many", [1]])
def test_sample_size_must_be_an_integer(value):
    assert "sample_size" in rejection(ExecuteClusterByIdRequest, {"sample_size": value})


def test_input_mappings_needs_at_least_one():
    message = rejection(LLMLabelingInput, {"input_mappings": []})
    assert "input_mappings" in message
    assert "at least 1 item" in message


# ------------------------------------------------------------------ unknown fields


@pytest.mark.parametrize(
    "extra",
    [
        {"filter": {"brand": "acme"}},  # typo of "filters"
        {"llm_labelling": {"enabled": True}},
        {"cluster_id": "clust_1"},
        {"n_clusters": 5},
    ],
)
def test_execute_request_rejects_unknown_fields(extra):
    message = rejection(ExecuteClusterByIdRequest, extra)
    assert next(iter(extra)) in message
    assert "Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (LLMLabeling, {"enabled": True, "temperature": 0.2}, "temperature"),
        (LLMLabeling, {"enabled": True, "description": "doc"}, "description"),
        (LLMLabelingInput, {"input_mappings": [{"input_key": "k"}], "mode": "x"}, "mode"),
        (InputMapping, {"input_key": "k", "paht": "title"}, "paht"),
        (FilterCondition, {"field": "a", "value": 1, "op": "eq"}, "op"),
        (
            ExecuteClusterByIdRequest,
            {"llm_labeling": {"labeling_inputs": {"input_mappings": [{"input_key": "k", "x": 1}]}}},
            "llm_labeling.labeling_inputs.input_mappings.0.x",
        ),
    ],
)
def test_request_models_reject_unknown_fields(model, data, field):
    message = rejection(model, data)
    assert field in message
    assert "Extra inputs are not permitted" in message


def test_response_models_ignore_unknown_fields():
    task = TaskResponse.model_validate(
        {"task_id": "t", "task_type": "engine_cluster_build", "status": "PENDING", "new": 1}
    )
    assert "new" not in task.model_dump()
    error = ErrorResponse.model_validate(
        {"status": 500, "error": {"message": "m", "type": "InternalError", "trace": "x"}}
    )
    assert error.error.message == "m"


# -------------------------------------------------------- examples from the reference

TASK_RESPONSE_EXAMPLES = [
    {
        "additional_data": {
            "batch_id": "btch_xyz789",
            "bucket_id": "bkt_products",
            "collection_ids": ["col_tier0", "col_tier1", "col_tier2"],
            "current_tier": 1,
            "job_id": "ray_job_123",
            "namespace_id": "ns_abc123",
            "object_count": 10000,
            "sample_object_ids": ["obj_001", "obj_002", "obj_003", "obj_004", "obj_005"],
            "total_tiers": 3,
        },
        "description": "Multi-tier batch processing task in progress (tier 1 of 3) with 10k objects",
        "inputs": ["batch_xyz789"],
        "status": "IN_PROGRESS",
        "task_id": "2d322a05-3178-4eca-aac6-b82b0a0313aa",
        "task_type": "api_buckets_batches_process",
    },
    {
        "additional_data": {"cluster_id": "cl_abc123", "job_id": "ray_job_456"},
        "description": "Completed clustering task with results",
        "inputs": [{"collection_ids": ["col_products"], "config": {"algorithm": "kmeans", "k": 5}}],
        "outputs": [{"cluster_id": "cl_abc123", "num_clusters": 5, "silhouette_score": 0.78}],
        "status": "COMPLETED",
        "task_id": "task_cluster_789",
        "task_type": "engine_cluster_build",
    },
    {
        "additional_data": {
            "bucket_id": "bkt_test",
            "error": "Invalid file format: Expected PDF, got PNG",
            "object_id": "obj_123",
        },
        "description": "Failed object creation task with error",
        "inputs": [{"bucket_id": "bkt_test", "object_id": "obj_123"}],
        "status": "FAILED",
        "task_id": "task_failed_123",
        "task_type": "api_buckets_objects_create",
    },
    {
        "additional_data": {
            "batch_id": "batch_old_123",
            "from_mongodb": True,
            "note": "Retrieved from persistent storage after 24hr Redis expiry",
        },
        "description": "Task retrieved from MongoDB fallback (Redis expired)",
        "inputs": ["batch_old_123"],
        "outputs": ["Processed 500 objects"],
        "status": "COMPLETED",
        "task_id": "taYOUR_OLD_API_KEY",
        "task_type": "api_buckets_batches_process",
    },
]


@pytest.mark.parametrize("example", TASK_RESPONSE_EXAMPLES, ids=lambda e: e["task_id"])
def test_task_response_examples_validate(example):
    data = strip_description(example)
    task = TaskResponse.model_validate(data)
    assert task.model_dump(mode="json", exclude_unset=True) == data


# TaskResponse property examples, one field at a time on top of a minimal task.
TASK_PROPERTY_EXAMPLES = [
    ("task_id", "task_abc123def456"),
    ("task_id", "550e8400-e29b-41d4-a716-446655440000"),
    ("task_type", "api_buckets_batches_process"),
    ("task_type", "engine_cluster_build"),
    ("task_type", "api_taxonomies_execute"),
    ("status", "PENDING"),
    ("status", "PROCESSING"),
    ("status", "COMPLETED"),
    ("status", "FAILED"),
    ("inputs", ["batch_xyz789"]),
    ("inputs", ["obj_123", "obj_456", "obj_789"]),
    ("inputs", [{"bucket_id": "bkt_abc", "collection_ids": ["col_1", "col_2"]}]),
    ("outputs", ["document_123", "document_456"]),
    ("outputs", [{"failed_count": 2, "processed_count": 100, "success_rate": 0.98}]),
    ("outputs", [{"cluster_id": "cl_abc123", "num_clusters": 5}]),
    ("additional_data", {"error": "Failed to process object: Invalid file format", "job_id": "123"}),
    ("additional_data", {"cluster_id": "cl_abc", "collection_ids": ["col_1"], "from_mongodb": True}),
    ("error", "Failed to process batch: Object not found"),
    ("error", "Invalid file format: Expected PDF, got PNG"),
    ("error", "Clustering failed: Insufficient data points"),
    ("error", None),
    ("queue_position", 1),
    ("estimated_wait_minutes", 2.5),
]


@pytest.mark.parametrize(("field", "value"), TASK_PROPERTY_EXAMPLES)
def test_task_response_property_examples_validate(field, value):
    data = {"task_id": "t", "task_type": "engine_cluster_build", "status": "PENDING"}
    data[field] = value
    task = TaskResponse.model_validate(data)
    assert task.model_dump(mode="json")[field] == value


def test_task_response_keeps_input_strings_and_objects_apart():
    task = TaskResponse.model_validate(
        {
            "task_id": "t",
            "task_type": "engine_cluster_build",
            "status": "COMPLETED",
            "inputs": ["batch_1", {"bucket_id": "bkt"}],
        }
    )
    assert task.inputs == ["batch_1", {"bucket_id": "bkt"}]


def test_error_response_example_validates():
    example = {
        "error": {
            "details": {"id": "ns_123", "resource": "namespace"},
            "message": "Namespace not found",
            "type": "NotFoundError",
        },
        "status": 404,
        "success": False,
    }
    response = ErrorResponse.model_validate(example)
    assert response.error.type == "NotFoundError"
    assert response.model_dump(exclude_unset=True) == example


def test_error_detail_with_code():
    detail = ErrorDetail(message="taken", type="ConflictError", code="namespace_name_taken")
    assert detail.code == "namespace_name_taken"


def test_http_validation_error_reads_a_fastapi_422_body():
    # FastAPI adds `input`, `ctx` and sometimes `url`; the contract lists loc/msg/type.
    body = {
        "detail": [
            {
                "type": "less_than_equal",
                "loc": ["body", "sample_size"],
                "msg": "Input should be less than or equal to 1000000",
                "input": 2_000_000,
                "ctx": {"le": 1_000_000},
            },
            {"type": "missing", "loc": ["body", "filters", "AND", 0, "value"], "msg": "Field required"},
        ]
    }
    error = HTTPValidationError.model_validate(body)
    assert error.detail[0].loc == ["body", "sample_size"]
    assert error.detail[1].loc == ["body", "filters", "AND", 0, "value"]
    assert isinstance(error.detail[1].loc[3], int)
    assert "loc" in rejection(ValidationErrorModel, {"msg": "m", "type": "t"})


LLM_LABELING_EXAMPLES = [
    {
        "description": "Text-only labeling with multiple fields",
        "enabled": True,
        "include_keywords": True,
        "include_summary": True,
        "labeling_inputs": {
            "input_mappings": [
                {"input_key": "title", "path": "title", "source_type": "payload"},
                {"input_key": "description", "path": "description", "source_type": "payload"},
                {"input_key": "text", "path": "text", "source_type": "payload"},
            ]
        },
        "model_name": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
    },
    {
        "description": "Multimodal labeling with images (Gemini)",
        "enabled": True,
        "include_keywords": True,
        "include_summary": True,
        "labeling_inputs": {
            "input_mappings": [
                {"input_key": "text", "path": "headline", "source_type": "payload"},
                {"input_key": "image_url", "path": "thumbnail_url", "source_type": "payload"},
            ]
        },
        "model_name": "gemini-2.5-flash-lite",
        "provider": "google",
    },
    {
        "description": "Multimodal labeling with video (Gemini)",
        "enabled": True,
        "include_keywords": True,
        "include_summary": True,
        "labeling_inputs": {
            "input_mappings": [
                {"input_key": "text", "path": "description", "source_type": "payload"},
                {"input_key": "video_url", "path": "video_url", "source_type": "payload"},
            ]
        },
        "model_name": "gemini-2.5-flash-lite",
        "provider": "google",
    },
    {
        "description": "OpenAI GPT-4o (highest quality, text-only)",
        "enabled": True,
        "include_keywords": True,
        "include_summary": True,
        "labeling_inputs": {
            "input_mappings": [{"input_key": "text", "path": "text", "source_type": "payload"}]
        },
        "model_name": "gpt-4o-2024-08-06",
        "provider": "openai",
    },
    {
        "description": "Anthropic Claude 3.5 Sonnet (best reasoning)",
        "enabled": True,
        "include_keywords": True,
        "include_summary": True,
        "labeling_inputs": {
            "input_mappings": [{"input_key": "text", "path": "text", "source_type": "payload"}]
        },
        "model_name": "claude-sonnet-4-5-20250929",
        "provider": "anthropic",
    },
    {
        "description": "Minimal configuration (uses defaults: text field from payload)",
        "enabled": True,
    },
    {
        "custom_prompt": (
            "You are a medical document classifier. Analyze the following patient record "
            "clusters and generate HIPAA-compliant category labels (2-3 words) that describe "
            "the medical condition or treatment type. DO NOT include patient names or "
            "identifiers. Return JSON array: "
            '[{"cluster_id": "cl_0", "label": "...", "keywords": [...]}]'
        ),
        "description": "Custom prompt for domain-specific labeling",
        "enabled": True,
        "labeling_inputs": {
            "input_mappings": [{"input_key": "text", "path": "text", "source_type": "payload"}]
        },
        "model_name": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
    },
]


@pytest.mark.parametrize("example", LLM_LABELING_EXAMPLES, ids=lambda e: e["description"])
def test_llm_labeling_examples_validate(example):
    data = strip_description(example)
    labeling = LLMLabeling.model_validate(data)
    assert labeling.enabled is True
    assert labeling.model_dump(mode="json", exclude_unset=True) == data
    # The same object is accepted as the execute request's inline override.
    assert ExecuteClusterByIdRequest(llm_labeling=data).llm_labeling == labeling


def test_minimal_labeling_example_leaves_model_choice_to_the_labeler():
    labeling = LLMLabeling.model_validate({"enabled": True})
    assert labeling.model_name is None
    assert labeling.provider is None
    assert labeling.labeling_inputs is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider", "openai"),
        ("provider", "google"),
        ("provider", "anthropic"),
        *[
            ("model_name", name)
            for name in [
                "gemini-2.5-flash-lite",
                "gemini-2.5-pro",
                "gpt-4o-mini-2024-07-18",
                "gpt-4o-2024-08-06",
                "claude-sonnet-4-5-20250929",
                "claude-haiku-4-5-20251001",
                "gpt-4.1-2025-04-14",
                "gpt-4.1-mini-2025-04-14",
                "o3-mini-2025-01-31",
            ]
        ],
        (
            "custom_prompt",
            "Analyze these document clusters and generate technical labels (2-3 words). "
            "Focus on programming languages and frameworks mentioned. Return JSON: "
            "[{'cluster_id': 'cl_0', 'label': '...', 'keywords': [...]}]",
        ),
        (
            "custom_prompt",
            "Generate emoji-based labels for these clusters. Use 1-2 emojis that represent "
            "the main theme. Return JSON: [{'cluster_id': 'cl_0', 'label': '🚀 Tech Innovation'}]",
        ),
        ("custom_prompt", None),
        (
            "response_shape",
            "Extract cluster category, confidence score between 0 and 1, and top 3 "
            "representative keywords",
        ),
        (
            "response_shape",
            "Generate cluster theme, sentiment (positive/negative/neutral), and list of key entities",
        ),
        (
            "response_shape",
            {
                "properties": {
                    "category": {"description": "Main category", "type": "string"},
                    "subcategory": {"description": "Subcategory if applicable", "type": "string"},
                    "confidence": {"maximum": 1, "minimum": 0, "type": "number"},
                    "keywords": {"items": {"type": "string"}, "maxItems": 5, "type": "array"},
                },
                "required": ["category", "confidence"],
                "type": "object",
            },
        ),
        ("response_shape", None),
        ("parameters", {"temperature": 0.2, "max_tokens": 256, "json_output": True}),
        ("parameters", {"temperature": 0.1, "top_k": 40, "max_output_tokens": 512}),
    ],
)
def test_llm_labeling_property_examples_validate(field, value):
    labeling = LLMLabeling.model_validate({field: value})
    assert labeling.model_dump(mode="json")[field] == value


INPUT_MAPPING_EXAMPLES = [
    {"input_key": "query_text", "path": "content.title", "source_type": "payload"},
    {"input_key": "lang", "override": "en", "source_type": "literal"},
    {"input_key": "image_vector", "path": "features.clip_vit_l_14", "source_type": "vector"},
]


@pytest.mark.parametrize("example", INPUT_MAPPING_EXAMPLES, ids=lambda e: e["input_key"])
def test_input_mapping_examples_validate(example):
    mapping = InputMapping.model_validate(example)
    assert mapping.model_dump(mode="json", exclude_unset=True) == example


@pytest.mark.parametrize(
    "mappings",
    [
        # The LLMLabelingInput docstring examples: text-only, images, video.
        [
            {"input_key": "headline", "source_type": "payload", "path": "headline"},
            {"input_key": "description", "source_type": "payload", "path": "description"},
        ],
        [
            {"input_key": "text", "source_type": "payload", "path": "headline"},
            {"input_key": "image_url", "source_type": "payload", "path": "thumbnail_url"},
        ],
        [
            {"input_key": "text", "source_type": "payload", "path": "description"},
            {"input_key": "video_url", "source_type": "payload", "path": "video_url"},
        ],
    ],
)
def test_llm_labeling_input_examples_validate(mappings):
    labeling_input = LLMLabelingInput(input_mappings=mappings)
    assert [m.input_key for m in labeling_input.input_mappings] == [m["input_key"] for m in mappings]


LOGICAL_EXAMPLES = {
    "AND": [
        {"field": "name", "operator": "eq", "value": "John"},
        {"field": "age", "operator": "gte", "value": 30},
    ],
    "OR": [
        {"field": "status", "operator": "eq", "value": "active"},
        {"field": "role", "operator": "eq", "value": "admin"},
    ],
    "NOT": [
        {"field": "department", "operator": "eq", "value": "HR"},
        {"field": "location", "operator": "eq", "value": "remote"},
    ],
}


@pytest.mark.parametrize("key", ["AND", "OR", "NOT"])
def test_logical_operator_property_examples_validate(key):
    example = LOGICAL_EXAMPLES[key]
    logical = LogicalOperator.model_validate({key: example, "case_sensitive": True})
    items = getattr(logical, key)
    assert all(isinstance(item, FilterCondition) for item in items)
    assert [item.model_dump(mode="json") for item in items] == example
    assert logical.case_sensitive is True
    assert logical.depth() == 1


def test_all_logical_examples_together_and_as_the_execute_filters():
    request = ExecuteClusterByIdRequest(filters=LOGICAL_EXAMPLES)
    dumped = request.filters.model_dump(mode="json", exclude_none=True)
    assert dumped == {**LOGICAL_EXAMPLES, "case_sensitive": False}
    assert len(list(request.filters.iter_conditions())) == 6


@pytest.mark.parametrize("path", ["inputs.query_text", "filters.AND[0].value"])
def test_dynamic_value_examples_validate(path):
    condition = FilterCondition.model_validate(
        {"field": "user_id", "value": {"type": "dynamic", "field": path}}
    )
    assert condition.value == DynamicValue(field=path)


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("eq", "John"),
        ("ne", None),
        ("gt", 1.5),
        ("lt", 10),
        ("gte", 30),
        ("lte", "2024-01-01"),
        ("in", ["a", "b"]),
        ("nin", [1, 2]),
        ("contains", "sub"),
        ("starts_with", "pre"),
        ("ends_with", "fix"),
        ("regex", "^a.*z$"),
        ("exists", True),
        ("is_null", False),
        ("text", "free text"),
        ("phrase", "exact phrase"),
    ],
)
def test_filter_condition_accepts_every_operator(operator, value):
    condition = FilterCondition.model_validate({"field": "f", "operator": operator, "value": value})
    assert condition.operator.value == operator
    assert condition.value == value


# --------------------------------------------------------------- filters: semantics


@pytest.mark.parametrize(
    "value",
    [
        {"field": "x"},  # a plain object that merely has a "field" key
        {"type": "static", "field": "x"},
        {"nested": {"type": "dynamic"}},
        [1, 2],
        "dynamic",
        None,
    ],
)
def test_only_type_dynamic_objects_become_dynamic_values(value):
    condition = FilterCondition(field="f", value=value)
    assert not isinstance(condition.value, DynamicValue)
    assert condition.value == value


def test_dynamic_value_needs_its_field():
    message = rejection(FilterCondition, {"field": "f", "value": {"type": "dynamic"}})
    assert "value" in message and "field" in message and "Field required" in message


def test_filter_condition_needs_field_and_value():
    assert "value" in rejection(FilterCondition, {"field": "f"})
    assert "field" in rejection(FilterCondition, {"value": 1})


def test_shorthand_becomes_eq_conditions_under_and():
    logical = LogicalOperator.model_validate({"metadata.title": "value", "brand": "acme"})
    assert logical.AND == [
        FilterCondition(field="metadata.title", operator=FilterOperator.eq, value="value"),
        FilterCondition(field="brand", operator=FilterOperator.eq, value="acme"),
    ]
    assert logical.OR is None and logical.NOT is None
    assert logical.model_extra == {}
    assert "metadata.title" not in logical.model_dump()


def test_shorthand_is_appended_after_explicit_and_items():
    logical = LogicalOperator.model_validate(
        {
            "AND": [{"field": "age", "operator": "gte", "value": 30}],
            "OR": [{"field": "role", "value": "admin"}],
            "case_sensitive": True,
            "name": "John",
        }
    )
    assert [(c.field, c.operator.value, c.value) for c in logical.AND] == [
        ("age", "gte", 30),
        ("name", "eq", "John"),
    ]
    assert logical.OR == [FilterCondition(field="role", value="admin")]
    assert logical.case_sensitive is True  # a real key, not a shorthand condition


def test_shorthand_inside_nested_operators():
    logical = LogicalOperator.model_validate(
        {
            "OR": [
                {"brand": "acme", "NOT": [{"discontinued": True}]},
                {"field": "brand", "value": "globex"},
            ]
        }
    )
    first, second = logical.OR
    assert isinstance(first, LogicalOperator)
    assert first.AND == [FilterCondition(field="brand", value="acme")]
    (inner,) = first.NOT
    assert isinstance(inner, LogicalOperator)
    assert inner.AND == [FilterCondition(field="discontinued", value=True)]
    assert second == FilterCondition(field="brand", value="globex")
    assert logical.depth() == 3
    # Only AND/OR/NOT lists of LogicalOperator | FilterCondition remain anywhere.
    dumped = json.dumps(logical.model_dump(mode="json"))
    assert '"discontinued": true' not in dumped


def test_shorthand_value_may_be_dynamic_or_structured():
    logical = LogicalOperator.model_validate(
        {"user_id": {"type": "dynamic", "field": "inputs.user_id"}, "tags": ["a", "b"]}
    )
    user, tags = logical.AND
    assert user.value == DynamicValue(field="inputs.user_id")
    assert tags.operator is FilterOperator.eq and tags.value == ["a", "b"]


def test_normalized_filters_round_trip():
    raw = {"OR": [{"brand": "acme"}, {"field": "price", "operator": "lt", "value": 10}], "x": 1}
    logical = LogicalOperator.model_validate(raw)
    again = LogicalOperator.model_validate(logical.model_dump(mode="json"))
    assert again == logical
    assert LogicalOperator.model_validate_json(json.dumps(raw)) == logical


def test_condition_shaped_item_with_a_stray_key_is_an_error_not_shorthand():
    message = rejection(
        LogicalOperator, {"AND": [{"field": "a", "value": 1, "casesensitive": True}]}
    )
    assert "casesensitive" in message and "Extra inputs are not permitted" in message


def test_a_condition_keeps_the_case_sensitive_the_hosted_sdk_sends():
    # The SDK sends it on every condition; it is kept through a dump (stored filters)
    # and stays out of the published schema, which is the reference's.
    raw = {"AND": [{"field": "a", "operator": "eq", "value": "X", "case_sensitive": True}], "case_sensitive": False}
    logical = LogicalOperator.model_validate(raw)
    assert logical.AND[0].case_sensitive is True
    again = LogicalOperator.model_validate(logical.model_dump(mode="json"))
    assert again.AND[0].case_sensitive is True
    assert "case_sensitive" not in model_schema(FilterCondition)["properties"]
    assert "case_sensitive" in rejection(FilterCondition, {"field": "a", "value": 1, "case_sensitive": "yes"})


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "brand", "value": "acme"},
        {"field": "price", "operator": "lt", "value": 10},
    ],
)
def test_bare_condition_in_place_of_an_operator_says_how_to_wrap_it(condition):
    message = rejection(ExecuteClusterByIdRequest, {"filters": condition})
    assert "filters" in message
    assert 'wrap it in a list, e.g. {"AND": [' in message
    # Nested in a list it is a condition as usual; with another key it is shorthand.
    assert ExecuteClusterByIdRequest(filters={"AND": [condition]}).filters.depth() == 1
    shorthand = LogicalOperator.model_validate({"field": "brand", "kind": "x"})
    assert [c.field for c in shorthand.AND] == ["field", "kind"]


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"AND": "brand"}, "AND"),
        ({"OR": {"field": "a", "value": 1}}, "OR"),  # a list is required
        ({"AND": ["brand=acme"]}, "AND.0"),
        ({"NOT": [42]}, "NOT.0"),
        ({"case_sensitive": "maybe"}, "case_sensitive"),
    ],
)
def test_malformed_filters_are_rejected(bad, where):
    assert where in rejection(LogicalOperator, bad)


def test_empty_filter_is_valid():
    logical = LogicalOperator.model_validate({})
    assert (logical.AND, logical.OR, logical.NOT) == (None, None, None)
    assert logical.depth() == 1
    assert list(logical.iter_conditions()) == []


def nested(depth: int) -> dict[str, Any]:
    """A filter `depth` operators deep, one condition at the bottom."""
    node: dict[str, Any] = {"field": "f", "value": 1}
    for level in range(depth):
        node = {("AND", "OR", "NOT")[level % 3]: [node]}
    return node


@pytest.mark.parametrize("depth", [1, 2, 3, MAX_FILTER_DEPTH, MAX_FILTER_DEPTH + 1, 20])
def test_depth_counts_nested_operators(depth):
    # Past MAX_FILTER_DEPTH the model still validates: the API layer answers 400.
    logical = LogicalOperator.model_validate(nested(depth))
    assert logical.depth() == depth
    assert list(logical.iter_conditions()) == [FilterCondition(field="f", value=1)]


def test_depth_takes_the_deepest_branch():
    logical = LogicalOperator.model_validate(
        {"AND": [{"a": 1}, nested(4)], "OR": [nested(2)], "NOT": [{"field": "b", "value": 2}]}
    )
    assert logical.depth() == 5


def test_max_filter_depth():
    assert MAX_FILTER_DEPTH == 8


# ---------------------------------------------------------------- providers, models

MODEL_FAMILIES = [
    (model, provider)
    for family, provider in [
        (OpenAIModel, LLMProvider.openai),
        (GoogleModel, LLMProvider.google),
        (AnthropicModel, LLMProvider.anthropic),
    ]
    for model in family
]


@pytest.mark.parametrize(("model", "provider"), MODEL_FAMILIES, ids=lambda x: str(x))
def test_provider_is_inferred_from_model_name(model, provider):
    labeling = LLMLabeling.model_validate({"enabled": True, "model_name": model.value})
    assert labeling.model_name is model
    assert labeling.provider is provider
    assert provider_for_model(model) is provider
    assert provider_for_model(model.value) is provider
    # An explicit, matching provider is kept.
    assert LLMLabeling(model_name=model, provider=provider).provider is provider


@pytest.mark.parametrize(
    ("model", "provider", "wrong"),
    [(m, p, w) for m, p in MODEL_FAMILIES for w in LLMProvider if w is not p],
    ids=lambda x: str(x),
)
def test_provider_model_mismatch_is_rejected(model, provider, wrong):
    message = rejection(LLMLabeling, {"model_name": model.value, "provider": wrong.value})
    assert f"provider '{wrong}' does not match model_name '{model}'" in message
    assert f"set provider to '{provider}' or omit it" in message


def test_provider_alone_is_accepted():
    labeling = LLMLabeling(enabled=True, provider="anthropic")
    assert labeling.provider is LLMProvider.anthropic
    assert labeling.model_name is None


def test_provider_for_unknown_model_says_what_to_use():
    with pytest.raises(ValueError, match="unknown model_name 'gpt-5'; use one of: gpt-4o"):
        provider_for_model("gpt-5")


@pytest.mark.parametrize(
    ("model", "resolved"),
    [
        ("gemini-3.1-flash-lite", GoogleModel.GEMINI_2_5_FLASH_LITE),
        (GoogleModel.GEMINI_3_1_FLASH_LITE, GoogleModel.GEMINI_2_5_FLASH_LITE),
        ("gemini-2.5-flash-lite", GoogleModel.GEMINI_2_5_FLASH_LITE),
        ("gemini-2.5-flash", GoogleModel.GEMINI_2_5_FLASH),
        (GoogleModel.GEMINI_2_5_PRO, GoogleModel.GEMINI_2_5_PRO),
    ],
)
def test_resolve_google_model(model, resolved):
    assert resolve_google_model(model) is resolved


def test_resolve_google_model_rejects_other_families():
    with pytest.raises(ValueError):
        resolve_google_model("gpt-4o-2024-08-06")


def test_gemini_alias_is_accepted_and_kept_as_sent():
    labeling = LLMLabeling(enabled=True, model_name="gemini-3.1-flash-lite")
    assert labeling.model_name is GoogleModel.GEMINI_3_1_FLASH_LITE
    assert labeling.provider is LLMProvider.google
    assert resolve_google_model(labeling.model_name) is GoogleModel.GEMINI_2_5_FLASH_LITE
    assert labeling.model_dump(mode="json")["model_name"] == "gemini-3.1-flash-lite"


def test_layout_stability_is_align_by_default_and_refuses_other_values_naming_them():
    from contracts.api import LayoutStability
    from contracts.events import ClusteringConfig, ComputeLayout
    from contracts.resources import CreateClusterRequest

    assert [m.value for m in LayoutStability] == ["align", "transform", "none"]
    assert ExecuteClusterByIdRequest().layout_stability is None  # unset: the cluster's setting applies
    assert ExecuteClusterByIdRequest(layout_stability="transform").layout_stability is LayoutStability.transform
    assert CreateClusterRequest(collection_ids=["c"], cluster_name="x").layout_stability is LayoutStability.align
    assert ClusteringConfig(clustering_method="kmeans", embedding_name="t").layout_stability is LayoutStability.align
    assert ComputeLayout(run_id="r", cluster_id="c", task_id="t", manifest_key="m", coords_key="k",
                         num_points=1).layout_stability is LayoutStability.align
    for model, data in ((ExecuteClusterByIdRequest, {}), (CreateClusterRequest, {"collection_ids": ["c"],
                                                                                "cluster_name": "x"})):
        with pytest.raises(ValidationError) as excinfo:
            model.model_validate({**data, "layout_stability": "rotate"})
        error = excinfo.value.errors()[0]
        assert error["loc"] == ("layout_stability",)
        assert "'align', 'transform' or 'none'" in error["msg"]
