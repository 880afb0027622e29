"""response_shape: schemas, the small validator, and descriptions turned into schemas."""
from __future__ import annotations

import pytest

from contracts.api import LLMLabeling
from services.labeler import shape
from services.labeler.shape import _validate, item_schema, label_of, schema_from_description, validate

REFERENCE_SCHEMA = {  # the reference's own example
    "type": "object",
    "properties": {
        "category": {"type": "string", "description": "Main category"},
        "subcategory": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["category", "confidence"],
}


@pytest.mark.parametrize("check", [validate, lambda i, s: _validate(i, s, "$")])
def test_validator_accepts_conforming_and_names_each_problem(check):
    assert check({"category": "Tech", "confidence": 0.9, "keywords": ["a"]}, REFERENCE_SCHEMA) == []
    problems = check({"confidence": 1.5, "keywords": ["a", 2, "c", "d", "e", "f"]}, REFERENCE_SCHEMA)
    text = " ".join(problems)
    assert "category" in text  # missing required
    assert "1.5" in text  # above maximum
    assert len(problems) >= 4  # + an item of the wrong type, + too many items
    assert check("not an object", REFERENCE_SCHEMA)


def test_small_validator_covers_enum_types_and_extra_properties():
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"s": {"enum": ["pos", "neg"]}, "n": {"type": "integer", "minimum": 1},
                             "b": {"type": ["boolean", "null"]}, "t": {"type": "string", "maxLength": 3}}}
    assert _validate({"s": "pos", "n": 2, "b": None, "t": "abc"}, schema, "$") == []
    problems = _validate({"s": "meh", "n": 0.5, "b": "yes", "t": "abcd", "x": 1}, schema, "$")
    assert len(problems) == 5, problems
    assert _validate(True, {"type": "integer"}, "$")  # a bool is not an integer


def test_default_item_schema_follows_the_flags():
    assert item_schema(LLMLabeling())["required"] == ["label", "summary", "keywords"]
    assert item_schema(LLMLabeling(include_summary=False, include_keywords=False))["required"] == ["label"]
    assert item_schema(LLMLabeling(response_shape=REFERENCE_SCHEMA)) is not None
    assert item_schema(LLMLabeling(response_shape=REFERENCE_SCHEMA))["required"] == ["category", "confidence"]


def test_reference_descriptions_become_schemas():
    s1 = schema_from_description("Extract cluster category, confidence score between 0 and 1, and top 3 "
                                 "representative keywords")
    assert s1["properties"]["category"]["type"] == "string"
    assert s1["properties"]["confidence_score"].items() >= {"type": "number", "minimum": 0.0, "maximum": 1.0}.items()
    assert s1["properties"]["keywords"].items() >= {"type": "array", "maxItems": 3}.items()
    assert set(s1["required"]) == {"category", "confidence_score", "keywords"}

    s2 = schema_from_description("Generate cluster theme, sentiment (positive/negative/neutral), and list of "
                                 "key entities")
    assert s2["properties"]["theme"]["type"] == "string"
    assert s2["properties"]["sentiment"]["enum"] == ["positive", "negative", "neutral"]
    assert s2["properties"]["entities"]["type"] == "array"

    s3 = schema_from_description("whether it is spam, number of distinct products")
    assert s3["properties"]["is_spam"]["type"] == "boolean"
    assert s3["properties"]["distinct_products_count"]["type"] == "integer"
    assert shape.schema_from_description("")["required"] == ["label", "summary", "keywords"]


def test_the_label_of_a_custom_output():
    assert label_of({"label": "L", "category": "C"}, REFERENCE_SCHEMA) == "L"
    assert label_of({"category": "Tech", "confidence": 1}, REFERENCE_SCHEMA) == "Tech"
    assert label_of({"main_topic": "Rockets", "score": 1},
                    {"properties": {"score": {"type": "number"}, "main_topic": {"type": "string"}}}) == "Rockets"
    assert label_of({"score": 1}, {"properties": {"score": {"type": "number"}}}) is None
