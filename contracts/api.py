"""REST contract of the clusters API, mirrored from the hosted product.

The exact contract is `execute-clustering-api.md` (an OpenAPI 0.82 excerpt): every
schema there has a model here with the same field names, defaults, enums and bounds,
so that a client written against the hosted API works against this service unchanged.

Where this module adds to or departs from the published schema (each is explained
where it is made):
  * `sample_size` must also be >= 1 (the schema only caps it).
  * `LogicalOperator` shorthand keys (`{"metadata.title": "x"}`) are rewritten into
    `eq` conditions under `AND` while validating, so nothing downstream sees them;
    a bare condition where an operator belongs (`{"field": ..., "value": ...}`) is
    refused rather than read as two shorthand conditions on "field" and "value".
  * `LLMLabeling.provider` is filled in from `model_name` and must match it; and
    `model_name` stays optional even when `enabled` is true (the contract's own
    "Minimal configuration" example is `{"enabled": true}`).
  * `ValidationError` is the class `ValidationErrorModel` (JSON title unchanged).
  * `ExecuteClusterByIdRequest` also takes `hierarchical` and `max_hierarchy_depth`,
    the hosted SDK's cluster-config fields (`VectorBasedConfigInput`), as per-run
    overrides of the cluster's values.

Enum member names equal their values where the value is a Python identifier
(`ExecutionMode.full`, `TaskStatusEnum.COMPLETED`, `TaskType.engine_cluster_build`);
`FilterOperator.in_` dodges the keyword, and the model enums use the names from the
reference's "Values" sections (`OpenAIModel.GPT_4O_MINI`, `GoogleModel.GEMINI_2_5_PRO`).
"""
from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    PrivateAttr,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = [
    "ACTIVE_STATUSES",
    "COMPLETED_STATUSES",
    "DEFAULT_HIERARCHY_DEPTH",
    "HierarchyDepth",
    "LayoutStabilityApplied",
    "NOISE_GROUP_ID",
    "NOISE_LABEL",
    "applied_as",
    "group_key",
    "parse_group_key",
    "MAX_FILTER_DEPTH",
    "MAX_HIERARCHY_DEPTH",
    "MIN_COMPOSITE_SOURCES",
    "TERMINAL_STATUSES",
    "AnthropicModel",
    "DynamicValue",
    "ErrorDetail",
    "ErrorResponse",
    "ExecuteClusterByIdRequest",
    "ExecutionMode",
    "FilterCondition",
    "FilterOperator",
    "GoogleModel",
    "HTTPValidationError",
    "InputMapping",
    "InputSourceType",
    "LLMLabeling",
    "LLMLabelingInput",
    "LLMModel",
    "LLMProvider",
    "LayoutStability",
    "LogicalOperator",
    "OpenAIModel",
    "TaskResponse",
    "TaskStatusEnum",
    "TaskType",
    "ValidationErrorModel",
    "provider_for_model",
    "resolve_google_model",
]


class _StrEnum(str, Enum):
    """A `str` enum whose str() and f-string form is the bare value.

    Python 3.11 renders `f"{ExecutionMode.full}"` as "ExecutionMode.full"; error
    messages and log lines want "full".
    """

    def __str__(self) -> str:
        return self.value


class _AnyOf:
    """JSON-schema fix-up for the callable-discriminated unions below.

    Pydantic renders them as `oneOf`, but their branches overlap (a DynamicValue also
    matches `{}`; a condition also matches a LogicalOperator, which takes any key),
    so `oneOf` would reject valid documents. The reference says `anyOf`.
    """

    def __get_pydantic_json_schema__(
        self, core_schema: Any, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        schema = handler(core_schema)
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
        return schema


# --------------------------------------------------------------------------- enums


class ExecutionMode(_StrEnum):
    """How an execution runs (`ExecuteClusterByIdRequest.mode`)."""

    full = "full"  # the complete clustering pipeline
    assign = "assign"  # assign new documents to the centroids of a previous run
    composite = "composite"  # cluster the centroids of several previous runs


class LayoutStability(_StrEnum):
    """How a run's map keeps its shape across runs of one cluster (the hosted API's
    `layout_stability`; clusterflow's implementation: services/clusterer/stability.py)."""

    align = "align"  # the new layout registered onto the previous run's (similarity transform)
    transform = "transform"  # the previous run's fitted projection reused when compatible
    none = "none"  # a fresh layout every run


class LayoutStabilityApplied(_StrEnum):
    """What a run reports it did (`layout_stability_applied`): the hosted SDK's names,
    which say "aligned" where the setting says "align"."""

    aligned = "aligned"
    transform = "transform"
    none = "none"


def applied_as(setting: LayoutStability | str) -> LayoutStabilityApplied:
    """The reported name of an applied setting."""
    setting = LayoutStability(setting)
    return LayoutStabilityApplied.aligned if setting is LayoutStability.align else LayoutStabilityApplied(setting.value)


class TaskType(_StrEnum):
    """Types of asynchronous tasks (the hosted product's full list)."""

    api_namespaces_create = "api_namespaces_create"
    api_namespaces_delete = "api_namespaces_delete"
    api_namespaces_snapshot_create = "api_namespaces_snapshot_create"
    api_namespaces_snapshot_restore = "api_namespaces_snapshot_restore"
    api_namespaces_migrations_run = "api_namespaces_migrations_run"
    api_buckets_objects_create = "api_buckets_objects_create"
    api_buckets_delete = "api_buckets_delete"
    api_buckets_batches_process = "api_buckets_batches_process"
    api_buckets_batches_submit = "api_buckets_batches_submit"
    api_buckets_uploads_create = "api_buckets_uploads_create"
    api_buckets_uploads_confirm = "api_buckets_uploads_confirm"
    api_buckets_uploads_batch_confirm = "api_buckets_uploads_batch_confirm"
    api_collections_documents_create = "api_collections_documents_create"
    api_collections_extraction_artifacts = "api_collections_extraction_artifacts"
    api_taxonomies_create = "api_taxonomies_create"
    api_taxonomies_execute = "api_taxonomies_execute"
    api_taxonomies_materialize = "api_taxonomies_materialize"
    api_evaluations_run = "api_evaluations_run"
    api_evaluations_dataset_create = "api_evaluations_dataset_create"
    api_retrievers_publish = "api_retrievers_publish"
    api_collections_export = "api_collections_export"
    api_collections_trigger = "api_collections_trigger"
    engine_feature_extractor_run = "engine_feature_extractor_run"
    engine_inference_run = "engine_inference_run"
    engine_object_processing = "engine_object_processing"
    engine_cluster_build = "engine_cluster_build"  # what a clustering execution is
    thumbnail = "thumbnail"
    video_segment = "video_segment"
    audio_segment = "audio_segment"
    converted_video = "converted_video"
    materialize = "materialize"
    plugin_custom = "plugin_custom"
    model_custom = "model_custom"


class TaskStatusEnum(_StrEnum):
    """Task statuses. Operation statuses first, then entity lifecycle statuses."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    INTERRUPTED = "INTERRUPTED"
    UNKNOWN = "UNKNOWN"
    SKIPPED = "SKIPPED"
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"
    SUSPENDED = "SUSPENDED"


# "Once a task reaches these states, it will not transition to another state."
TERMINAL_STATUSES: frozenset[TaskStatusEnum] = frozenset(
    {
        TaskStatusEnum.COMPLETED,
        TaskStatusEnum.COMPLETED_WITH_ERRORS,
        TaskStatusEnum.FAILED,
        TaskStatusEnum.CANCELED,
    }
)

# A run with results (a usable source, a previous run to compare with): completed, with
# or without labeling errors.
COMPLETED_STATUSES: frozenset[TaskStatusEnum] = frozenset(
    {TaskStatusEnum.COMPLETED, TaskStatusEnum.COMPLETED_WITH_ERRORS}
)

# A run's group of points (docs/vocabulary.md: `group_id` inside, `cluster_id` at the
# REST edge) is named "cl_<n>"; the engine labels noise -1, so noise is "cl_-1" everywhere (never a word like "noise", which would sort and parse
# unlike the others).
NOISE_LABEL = -1


def group_key(label: int) -> str:
    """The group id of the engine's label `label`: ``3 -> "cl_3"``, noise ``-> "cl_-1"``."""
    return f"cl_{int(label)}"


def parse_group_key(key: str) -> int:
    if not key.startswith("cl_"):
        raise ValueError(f'group id {key!r} must look like "cl_<n>"')
    try:
        return int(key[3:])
    except ValueError:
        raise ValueError(f'group id {key!r} must look like "cl_<n>"') from None


NOISE_GROUP_ID = group_key(NOISE_LABEL)

# The statuses a client keeps polling. The TaskResponse.status text lists three, the
# enum's "Polling Guidance" four (adding QUEUED); a queued task is plainly not done,
# so the wider list wins.
ACTIVE_STATUSES: frozenset[TaskStatusEnum] = frozenset(
    {
        TaskStatusEnum.PENDING,
        TaskStatusEnum.QUEUED,
        TaskStatusEnum.IN_PROGRESS,
        TaskStatusEnum.PROCESSING,
    }
)


class FilterOperator(_StrEnum):
    """Supported filter operators across database implementations."""

    eq = "eq"
    ne = "ne"
    gt = "gt"
    lt = "lt"
    gte = "gte"
    lte = "lte"
    in_ = "in"  # `in` is a Python keyword
    nin = "nin"
    contains = "contains"
    starts_with = "starts_with"
    ends_with = "ends_with"
    regex = "regex"
    exists = "exists"
    is_null = "is_null"
    text = "text"
    phrase = "phrase"


class InputSourceType(_StrEnum):
    """Where the value for an input should be retrieved from."""

    payload = "payload"
    literal = "literal"
    vector = "vector"
    blob = "blob"


class LLMProvider(_StrEnum):
    """Supported LLM providers."""

    openai = "openai"
    google = "google"
    anthropic = "anthropic"


class OpenAIModel(_StrEnum):
    GPT_4O = "gpt-4o-2024-08-06"
    GPT_4O_MINI = "gpt-4o-mini-2024-07-18"
    GPT_41 = "gpt-4.1-2025-04-14"
    GPT_41_MINI = "gpt-4.1-mini-2025-04-14"
    O3_MINI = "o3-mini-2025-01-31"  # shut down: the labeler calls its successor (services.labeler.models)
    # Current models, beyond the reference's enum.
    GPT_5_5 = "gpt-5.5"


class GoogleModel(_StrEnum):
    GEMINI_2_5_FLASH_LITE = "gemini-2.5-flash-lite"
    GEMINI_2_5_FLASH = "gemini-2.5-flash"
    GEMINI_2_5_PRO = "gemini-2.5-pro"
    # Accepted for backwards compatibility only: Google's API has no such model, and
    # the reference maps it to gemini-2.5-flash-lite at runtime (resolve_google_model).
    GEMINI_3_1_FLASH_LITE = "gemini-3.1-flash-lite"


class AnthropicModel(_StrEnum):
    CLAUDE_SONNET_4_5 = "claude-sonnet-4-5-20250929"
    CLAUDE_HAIKU_4_5 = "claude-haiku-4-5-20251001"
    # Retired (or past end of life, for Sonnet 4.5): accepted as the reference does,
    # and the labeler calls their successors (services.labeler.models).
    CLAUDE_3_5_SONNET = "claude-3-5-sonnet-20241022"
    CLAUDE_3_5_HAIKU = "claude-3-5-haiku-20241022"
    # Current models, beyond the reference's enum.
    CLAUDE_SONNET_4_6 = "claude-sonnet-4-6"
    CLAUDE_OPUS_4_7 = "claude-opus-4-7"


LLMModel = Union[OpenAIModel, GoogleModel, AnthropicModel]

_MODEL_FAMILIES: dict[type[_StrEnum], LLMProvider] = {
    OpenAIModel: LLMProvider.openai,
    GoogleModel: LLMProvider.google,
    AnthropicModel: LLMProvider.anthropic,
}


def _parse_model(model: LLMModel | str) -> LLMModel:
    """The enum member for a model name; ValueError listing the valid names if none."""
    for family in _MODEL_FAMILIES:
        try:
            return family(model)  # type: ignore[return-value]
        except ValueError:
            continue
    valid = ", ".join(m.value for family in _MODEL_FAMILIES for m in family)
    raise ValueError(f"unknown model_name {model!r}; use one of: {valid}")


def provider_for_model(model: LLMModel | str) -> LLMProvider:
    """The provider that serves a model (the family its enum belongs to)."""
    return _MODEL_FAMILIES[type(_parse_model(model))]


def resolve_google_model(model: GoogleModel | str) -> GoogleModel:
    """The Gemini model to actually call: the gemini-3.1-flash-lite alias becomes
    gemini-2.5-flash-lite; every other model is returned as is."""
    model = GoogleModel(model)
    if model is GoogleModel.GEMINI_3_1_FLASH_LITE:
        return GoogleModel.GEMINI_2_5_FLASH_LITE
    return model


# ------------------------------------------------------------------------ filters

# Nesting limit for LogicalOperator.depth(). The reference promises "a defined depth
# limit" without giving it; 8 is ours. The models do not enforce it, so that the API
# layer can answer 400 (ErrorResponse) past it rather than a 422.
MAX_FILTER_DEPTH = 8


class DynamicValue(BaseModel):
    """A value that should be dynamically resolved from the query request."""

    type: Literal["dynamic"] = "dynamic"
    field: str = Field(
        description="The dot-notation path to the value in the runtime query request, "
        "e.g., 'inputs.user_id'",
    )


def _value_kind(value: Any) -> str:
    # Only an explicit {"type": "dynamic"} is a DynamicValue. Trying DynamicValue first
    # would turn any plain dict that happens to have a "field" key into one, since
    # `type` has a default.
    if isinstance(value, DynamicValue):
        return "dynamic"
    if isinstance(value, dict) and value.get("type") == "dynamic":
        return "dynamic"
    return "literal"


FilterValue = Annotated[
    Union[Annotated[DynamicValue, Tag("dynamic")], Annotated[Any, Tag("literal")]],
    Discriminator(_value_kind),
    _AnyOf(),
]


def _bool_or_none(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be true, false or null")
    return value


def _any(name: str, value: Any) -> Any:
    return value


def _accept_hosted_keys(cls, data: Any, handler: Any) -> Any:
    """Take the keys the hosted SDK sends beyond the reference's schema (`_hosted_keys`:
    name -> check) out of the body before validating, and keep them on the model: the
    published schema stays the reference's."""
    found: dict[str, Any] = {}
    if isinstance(data, dict) and cls._hosted_keys.keys() & data.keys():
        found = {k: check(k, data[k]) for k, check in cls._hosted_keys.items() if k in data}
        data = {k: v for k, v in data.items() if k not in cls._hosted_keys}
    model = handler(data)
    if found:
        model._hosted = {**model._hosted, **found}
    return model


def _dump_hosted_keys(self, handler: Any) -> Any:
    """Dumps carry the hosted keys back (stored filters keep their case_sensitive)."""
    dumped = handler(self)
    if isinstance(dumped, dict):
        dumped.update({k: v for k, v in self._hosted.items() if v is not None})
    return dumped


class FilterCondition(BaseModel):
    """A single filter condition: `field` `operator` `value`."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="Field name to filter on")
    operator: FilterOperator = Field(
        default=FilterOperator.eq, description="Comparison operator"
    )
    value: FilterValue = Field(description="Value to compare against")

    # The hosted SDK sends `case_sensitive` on every condition (not in the reference's
    # schema); null inherits the enclosing operator's setting (clusterflow/filters/).
    _hosted_keys: ClassVar[dict[str, Any]] = {"case_sensitive": _bool_or_none}
    _hosted: dict[str, Any] = PrivateAttr(default_factory=dict)
    _accept_hosted = model_validator(mode="wrap")(_accept_hosted_keys)
    _dump_hosted = model_serializer(mode="wrap")(_dump_hosted_keys)

    @property
    def case_sensitive(self) -> bool | None:
        return self._hosted.get("case_sensitive")


# Keys of a LogicalOperator that are not shorthand equality conditions.
_OPERATOR_KEYS = frozenset({"AND", "OR", "NOT"})
_LOGICAL_KEYS = _OPERATOR_KEYS | {"case_sensitive"}
_CONDITION_KEYS = frozenset(FilterCondition.model_fields)


def _node_kind(item: Any) -> str:
    # A dict is a FilterCondition when it names a `field` and no AND/OR/NOT; anything
    # else is a (possibly shorthand) LogicalOperator. Deciding by shape rather than by
    # trial keeps the errors for a malformed condition about the condition (a stray
    # key is refused, not read as shorthand), and a condition never gets read as
    # shorthand keys "field"/"operator"/"value".
    if isinstance(item, FilterCondition):
        return "condition"
    if isinstance(item, dict) and "field" in item and not _OPERATOR_KEYS & item.keys():
        return "condition"
    return "logical"


FilterNode = Annotated[
    Union[
        Annotated["LogicalOperator", Tag("logical")],
        Annotated[FilterCondition, Tag("condition")],
    ],
    Discriminator(_node_kind),
    _AnyOf(),
]


class LogicalOperator(BaseModel):
    """A logical operation (AND, OR, NOT) on filter conditions, nestable.

    The three lists combine with AND: every AND item holds, at least one OR item
    holds, and no NOT item holds. Any other key is a shorthand equality condition:
    `{"metadata.title": "x"}` means `{"AND": [{"field": "metadata.title",
    "operator": "eq", "value": "x"}]}`, and validation rewrites it so (appending to
    any explicit AND items, in key order). Downstream code therefore sees only
    AND/OR/NOT lists of LogicalOperator | FilterCondition.
    """

    # "allow" keeps `additionalProperties: true` in the schema, as the reference has
    # it; the validator below consumes every extra key, so `model_extra` stays empty.
    model_config = ConfigDict(extra="allow")

    AND: list[FilterNode] | None = Field(
        default=None,
        description="Logical AND operation - all conditions must be true",
    )
    OR: list[FilterNode] | None = Field(
        default=None,
        description="Logical OR operation - at least one condition must be true",
    )
    NOT: list[FilterNode] | None = Field(
        default=None,
        description="Logical NOT operation - all conditions must be false",
    )
    case_sensitive: bool | None = Field(
        default=False, description="Whether to perform case-sensitive matching"
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # a model instance, or garbage pydantic will reject
        shorthand = {k: v for k, v in data.items() if k not in _LOGICAL_KEYS}
        if not shorthand:
            return data
        if _CONDITION_KEYS >= data.keys() >= {"field", "value"}:
            # Read literally this is `field == <name> AND value == <value>`, a filter
            # that silently matches nothing; it is surely a condition put where an
            # operator belongs (e.g. `filters` itself). Say how to write it.
            raise ValueError(
                "a filter condition cannot stand where a logical operator is "
                'expected; wrap it in a list, e.g. {"AND": [{"field": ..., '
                '"operator": ..., "value": ...}]}'
            )
        expanded = {k: v for k, v in data.items() if k in _LOGICAL_KEYS}
        explicit_and = expanded.get("AND") or []
        if not isinstance(explicit_and, list):
            return data  # let the AND field report its own type error
        expanded["AND"] = [
            *explicit_and,
            *({"field": k, "operator": "eq", "value": v} for k, v in shorthand.items()),
        ]
        return expanded

    def depth(self) -> int:
        """Nesting depth: 1 for this operator, plus the deepest nested operator.

        Conditions (shorthand ones included) add nothing: `{}` and
        `{"AND": [condition]}` have depth 1, `{"AND": [{"OR": [...]}]}` depth 2.
        """
        nested = [
            item.depth()
            for items in (self.AND, self.OR, self.NOT)
            for item in items or ()
            if isinstance(item, LogicalOperator)
        ]
        return 1 + max(nested, default=0)

    def iter_conditions(self) -> Iterator[FilterCondition]:
        """Every FilterCondition in the tree, depth first, AND then OR then NOT."""
        for items in (self.AND, self.OR, self.NOT):
            for item in items or ():
                if isinstance(item, LogicalOperator):
                    yield from item.iter_conditions()
                else:
                    yield item


# --------------------------------------------------------------------- LLM labeling


class InputMapping(BaseModel):
    """Declarative mapping for building one LLM input from a document."""

    model_config = ConfigDict(extra="forbid")

    input_key: str = Field(description="Key used in the constructed inputs payload.")
    source_type: InputSourceType | None = Field(
        default=None, description="Source of the value (payload, literal, vector)."
    )
    path: str | None = Field(
        default=None,
        description="Dot-notation path inside payload/vector when source_type is "
        "PAYLOAD or VECTOR.",
    )
    override: Any = Field(
        default=None,
        description="Static value used when source_type is LITERAL. Overrides any path.",
    )


class LLMLabelingInput(BaseModel):
    """Input configuration for LLM-based cluster labeling."""

    model_config = ConfigDict(extra="forbid")

    input_mappings: list[InputMapping] = Field(
        min_length=1,
        description="How to build the LLM context from document payloads "
        "(text, image_url, video_url, audio_url). At least one is required.",
    )


class LLMLabeling(BaseModel):
    """Configuration for LLM-based cluster labeling.

    `provider` is inferred from `model_name` when absent, and must match its family
    when given. `model_name` may be absent even with `enabled` true: the reference
    field text says "REQUIRED when enabled=True", but its own "Minimal configuration"
    example is `{"enabled": true}`, so the labeler picks its default model instead.
    `model_name` is kept as sent (aliases included); call `resolve_google_model` to
    get the model to call.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False, description="Whether to generate labels for clusters using LLM."
    )
    labeling_inputs: LLMLabelingInput | None = Field(
        default=None,
        description="Input mappings for the LLM. When null, the whole document "
        "payload is serialized as JSON and sent.",
    )
    provider: LLMProvider | None = Field(
        default=None,
        description="LLM provider to use for labeling. If not specified, "
        "automatically inferred from model_name.",
    )
    model_name: LLMModel | None = Field(
        default=None, description="Specific LLM model to use for cluster labeling."
    )
    include_summary: bool = Field(
        default=True, description="Whether to generate cluster summaries"
    )
    include_keywords: bool = Field(
        default=True, description="Whether to extract keywords for clusters"
    )
    max_samples_per_cluster: Annotated[int, Field(ge=1, le=20)] | None = Field(
        default=None,
        description="Maximum representative documents sent to the LLM per cluster. "
        "When null, scales with cluster size and spread (3-20).",
    )
    sample_text_max_length: int = Field(
        default=200,
        ge=50,
        le=500,
        description="Maximum characters per document sample text",
    )
    use_embedding_dedup: bool = Field(
        default=True,
        description="Enable embedding-based label deduplication to prevent "
        "near-duplicate labels",
    )
    embedding_similarity_threshold: float = Field(
        default=0.8,
        ge=0.5,
        le=1,
        description="Cosine similarity above which two labels are duplicates",
    )
    cache_ttl_seconds: int = Field(
        default=604800,
        ge=0,
        le=2592000,
        description="Time-to-live for cached labels in seconds (default 7 days; "
        "0 disables caching).",
    )
    custom_prompt: str | None = Field(
        default=None,
        description="Custom prompt template; replaces the default prompt entirely.",
    )
    response_shape: str | dict[str, Any] | None = Field(
        default=None,
        description="Custom structured output: a natural-language description "
        "(string) or an explicit JSON schema (object).",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Provider-specific parameters forwarded to the LLM service "
        "(temperature, max_tokens, ...).",
    )
    # The hosted SDK's LLMLabelingInput sends these three (not in the reference's
    # schema); clusterflow picks the members nearest the centroid and has no labeling
    # context or candidate list, so the gateway answers 400 for any other value
    # (services/gateway/validation.py). Read them with `hosted_key`.
    _hosted_keys: ClassVar[dict[str, Any]] = {"sample_selection_strategy": _any, "labeling_context": _any, "candidate_labels": _any}
    _hosted: dict[str, Any] = PrivateAttr(default_factory=dict)
    _accept_hosted = model_validator(mode="wrap")(_accept_hosted_keys)
    _dump_hosted = model_serializer(mode="wrap")(_dump_hosted_keys)

    def hosted_key(self, name: str, default: Any = None) -> Any:
        return self._hosted.get(name, default)

    @field_validator("model_name", mode="before")
    @classmethod
    def _known_model(cls, value: Any) -> Any:
        # One error listing every valid name, instead of one error per model enum.
        if value is None or isinstance(value, (OpenAIModel, GoogleModel, AnthropicModel)):
            return value
        return _parse_model(value)

    @model_validator(mode="after")
    def _provider_matches_model(self) -> LLMLabeling:
        if self.model_name is None:
            return self  # provider alone is fine: the labeler picks its default model
        family = provider_for_model(self.model_name)
        if self.provider is None:
            self.provider = family
        elif self.provider != family:
            raise ValueError(
                f"provider {self.provider.value!r} does not match model_name "
                f"{self.model_name.value!r}, a model of provider {family.value!r}; set "
                f"provider to {family.value!r} or omit it to have it inferred"
            )
        return self


# ------------------------------------------------------------------- execute request


# A run's cluster hierarchy (services/clusterer/engine/hierarchy.py): at most this many
# levels, the run's clusters (the leaves) included; the hosted SDK's default and bound.
DEFAULT_HIERARCHY_DEPTH = 3
MAX_HIERARCHY_DEPTH = 5
HierarchyDepth = Annotated[int, Field(ge=2, le=MAX_HIERARCHY_DEPTH)]


# Composite runs cluster the centroids of at least this many prior executions. Not a
# schema bound (the field has none): the API layer checks it, together with the runs'
# existence and status, and answers 400.
MIN_COMPOSITE_SOURCES = 2


class ExecuteClusterByIdRequest(BaseModel):
    """Optional body for POST /v1/clusters/{cluster_id}/execute.

    Per-execution overrides; none of them is persisted on the cluster.
    """

    model_config = ConfigDict(extra="forbid")

    mode: ExecutionMode = Field(
        default=ExecutionMode.full,
        description="Execution mode: full (default), assign (assign new documents to "
        "existing centroids), or composite (cluster the centroids of prior runs).",
    )
    source_execution_ids: list[str] | None = Field(
        default=None,
        description="Run ids whose centroids are clustered together (mode="
        "'composite' only). Minimum 2 executions required.",
    )
    assignment_threshold: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=0.5,
        description="Minimum cosine similarity to assign a document to a cluster "
        "(mode='assign' only); below it a document is noise (cluster_id=-1).",
    )
    filters: LogicalOperator | None = Field(
        default=None,
        description="Optional filter override for this execution only.",
    )
    # Departure: the schema only caps sample_size; a sample of 0 or fewer documents
    # makes no sense, so it must also be >= 1.
    sample_size: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None,
        description="Optional per-execution document cap. KMeans supports up to 1M; "
        "O(N^2) algorithms (HDBSCAN, Spectral, Agglomerative) are capped at 50K.",
    )
    vis_n_components: Literal[2, 3] | None = Field(
        default=None,
        description="Number of dimensions for visualization coordinates (2 or 3).",
    )
    defer_visualization: bool | None = Field(
        default=None,
        description="When True, skip inline UMAP and compute scatter coordinates "
        "lazily at /visualization time.",
    )
    llm_labeling: LLMLabeling | None = Field(
        default=None,
        description="Optional inline LLM labeling override for this execution; set "
        "enabled: true to actually run labeling.",
    )
    hierarchical: bool | None = Field(
        default=None,
        description="Override of the cluster's `hierarchical`: also build topics over this run's clusters "
        "(parent_cluster_id, child_cluster_ids, hierarchy_level on the centroids). auto runs always do.",
    )
    max_hierarchy_depth: HierarchyDepth | None = Field(
        default=None,
        description=f"Override of the cluster's `max_hierarchy_depth`: the most levels of the hierarchy, the "
        f"run's clusters included (2 to {MAX_HIERARCHY_DEPTH}; 2 is topics and their subtopics).",
    )
    # The hosted SDK's addition to the reference's fields (hosted-sdk-notes.md).
    layout_stability: LayoutStability | None = Field(
        default=None,
        description="How this run's map keeps the shape of the previous run's: align (the cluster's "
        "default unless set: the new layout registered onto the previous run's by a similarity "
        "transform over the shared documents), transform (the previous run's fitted projection "
        "reused when compatible, else align), none (a fresh layout).",
    )


# -------------------------------------------------------------------------- responses


class TaskResponse(BaseModel):
    """Task response model returned by the API (GET /v1/tasks/{task_id})."""

    task_id: str = Field(description="Unique identifier for the task.")
    task_type: TaskType = Field(description="Type of operation this task represents.")
    status: TaskStatusEnum = Field(description="Current status of the task.")
    inputs: list[str | dict[str, Any]] | None = Field(
        default=None, description="Input parameters or data used to start the task."
    )
    outputs: list[str | dict[str, Any]] | None = Field(
        default=None, description="Output results produced by the task."
    )
    additional_data: dict[str, Any] | None = Field(
        default=None,
        description="Additional metadata and context (job ids, error, progress).",
    )
    error: str | None = Field(
        default=None,
        description="Flattened error message, from additional_data['error'] when the "
        "task has FAILED status.",
    )
    queue_position: int | None = Field(
        default=None, description="1-based position in the processing waitlist."
    )
    estimated_wait_minutes: float | None = Field(
        default=None, description="Estimated minutes until processing starts."
    )


class ErrorDetail(BaseModel):
    """Error detail model."""

    message: str = Field(description="Human-readable error message")
    type: str = Field(description="Stable error type identifier (machine-readable)")
    code: str | None = Field(
        default=None, description="Fine-grained error code for programmatic handling"
    )
    details: dict[str, Any] | None = Field(
        default=None, description="Optional structured details to help debugging"
    )


class ErrorResponse(BaseModel):
    """Error response model (400, 401, 403, 404, 500)."""

    success: bool = Field(default=False, description="Always false for error responses")
    status: int = Field(description="HTTP status code for this error")
    error: ErrorDetail = Field(description="Error details payload")


class ValidationErrorModel(BaseModel):
    """One entry of a 422 body. Named so as not to clash with pydantic's
    ValidationError; its JSON schema keeps the reference title."""

    model_config = ConfigDict(title="ValidationError")

    loc: list[str | int] = Field(title="Location")
    msg: str = Field(title="Message")
    type: str = Field(title="Error Type")


class HTTPValidationError(BaseModel):
    """The 422 body: FastAPI's `{"detail": [{loc, msg, type}]}`."""

    detail: list[ValidationErrorModel] = Field(default_factory=list)
