"""ExecutionRequested carries its own model of a run's overrides (RunOptions), not the
REST body: it tolerates keys from a newer producer, references no REST request or
response model, and the gateway maps every field of the REST body into it."""
from __future__ import annotations

import inspect
import json
import typing

from pydantic import BaseModel

import contracts.api as api
from contracts.api import ExecuteClusterByIdRequest, ExecutionMode, LayoutStability, LLMLabeling, LogicalOperator
from contracts.events import ExecutionRequested, RunOptions
from clusterflow.readmodel import stored
from services.gateway.routes.runs import GATEWAY_ONLY, RENAMED_OPTIONS, run_options
from services.status.projection import apply

IDS = dict(namespace="ns", run_id="run_1", cluster_id="clust_1", task_id="task_1")

# A value other than the default for each field of the REST body. A new field of
# ExecuteClusterByIdRequest fails test_every_rest_field_is_mapped_or_gateway_only until
# it has a value here, and then until run_options carries it (or GATEWAY_ONLY names it).
SAMPLES = {
    "mode": ExecutionMode.composite,
    "source_execution_ids": ["run_a", "run_b"],
    "assignment_threshold": 0.8,
    "filters": LogicalOperator.model_validate({"AND": [{"field": "group", "operator": "eq", "value": 1}]}),
    "sample_size": 123,
    "vis_n_components": 3,
    "defer_visualization": True,
    "llm_labeling": LLMLabeling(enabled=True, model_name="gpt-4o-mini-2024-07-18"),
    "hierarchical": True,
    "max_hierarchy_depth": 4,
    "layout_stability": LayoutStability.transform,
}


def test_an_unknown_option_key_from_a_newer_producer_parses():
    wire = json.loads(ExecutionRequested(**IDS, options=RunOptions(sample_size=10)).model_dump_json())
    wire["options"]["cluster_temperature"] = 0.7  # a REST field this consumer does not know yet
    event = ExecutionRequested.model_validate_json(json.dumps(wire))
    assert event.options.sample_size == 10
    assert "cluster_temperature" not in event.options.model_dump()


def test_the_rest_body_itself_stays_strict():
    try:
        ExecuteClusterByIdRequest.model_validate({"cluster_temperature": 0.7})
    except ValueError as exc:
        assert "cluster_temperature" in str(exc)
    else:
        raise AssertionError("the REST body accepted an unknown field")


def _models_reachable_from(model: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()

    def visit(annotation) -> None:
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            if annotation not in seen:
                seen.add(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(model)
    return seen


def test_the_event_references_no_rest_request_or_response_model():
    rest_bodies = {m for name, m in vars(api).items() if inspect.isclass(m) and issubclass(m, BaseModel)
                   and m.__module__ == api.__name__ and name.endswith(("Request", "Response", "Error"))}
    assert ExecuteClusterByIdRequest in rest_bodies  # the check would see the old `options`
    reachable = _models_reachable_from(ExecutionRequested)
    assert RunOptions in reachable
    assert not reachable & rest_bodies, reachable & rest_bodies
    assert not issubclass(RunOptions, ExecuteClusterByIdRequest)
    defs = set(ExecutionRequested.model_json_schema()["$defs"])
    assert "RunOptions" in defs and not defs & {m.__name__ for m in rest_bodies}, defs


def test_every_rest_field_is_mapped_or_gateway_only():
    fields = set(ExecuteClusterByIdRequest.model_fields)
    assert set(SAMPLES) | GATEWAY_ONLY == fields, "give each new REST field a sample value here"
    assert not set(SAMPLES) & GATEWAY_ONLY
    default = run_options(ExecuteClusterByIdRequest())
    for name, value in SAMPLES.items():
        mapped = run_options(ExecuteClusterByIdRequest(**{name: value}))
        option = RENAMED_OPTIONS.get(name, name)
        assert option in RunOptions.model_fields, f"RunOptions has no {option}: add it, or list it in GATEWAY_ONLY"
        assert getattr(mapped, option) == value != getattr(default, option), f"run_options drops {name}"


def test_the_mapped_options_show_the_same_overrides_as_the_request():
    # The task's inputs show the overrides: from the REST body at first (the gateway),
    # from the event once projected. Both must read the same.
    body = ExecuteClusterByIdRequest(**SAMPLES)
    dump = dict(mode="json", exclude_none=True, exclude_defaults=True)
    assert stored(run_options(body), **dump) == body.model_dump(**dump)
    assert stored(run_options(ExecuteClusterByIdRequest()), **dump) == {}
    # RunOptions' own names differ: only the read model's names make them equal.
    assert run_options(body).model_dump(**dump) != body.model_dump(**dump)


def test_the_projected_inputs_show_the_rest_bodys_names():
    body = ExecuteClusterByIdRequest(**SAMPLES)
    event = ExecutionRequested(**IDS, options=run_options(body))
    run = apply(None, event)
    assert run["inputs"][0]["overrides"]["source_execution_ids"] == ["run_a", "run_b"]
    assert "source_run_ids" not in run["inputs"][0]["overrides"]
    assert run["source_execution_ids"] == ["run_a", "run_b"]


def test_a_version_1_event_written_with_the_rest_body_reads_the_same():
    body = ExecuteClusterByIdRequest(**SAMPLES)
    old_wire = json.dumps({**IDS, "schema_version": 1, "event_type": "execution.requested",
                           "options": body.model_dump(mode="json")})
    assert ExecutionRequested.model_validate_json(old_wire).options == run_options(body)


def test_the_projected_inputs_keep_the_keys_a_model_serializer_adds():
    # The hosted SDK sends llm_labeling.sample_selection_strategy: LLMLabeling keeps it
    # through its own serializer, not as a field; the projector must not trip over it.
    body = ExecuteClusterByIdRequest.model_validate(
        {"mode": "assign", "llm_labeling": {"enabled": False, "sample_selection_strategy": "nearest"}})
    run = apply(None, ExecutionRequested(**IDS, options=run_options(body)))
    overrides = run["inputs"][0]["overrides"]
    assert overrides["llm_labeling"]["sample_selection_strategy"] == "nearest"
    dump = dict(mode="json", exclude_none=True, exclude_defaults=True)
    assert overrides == body.model_dump(**dump)
