"""`response_shape`: the schema of one cluster's LLM output, and checking replies against it.

- no shape: label (string), plus summary (string) and keywords (array of strings)
  when `include_summary` / `include_keywords` ask for them;
- a dict: that JSON schema;
- a string: a plain-language description, turned into a schema by a deterministic
  heuristic (`schema_from_description`): "Extract cluster category, confidence score
  between 0 and 1, and top 3 representative keywords" gives `category` (string),
  `confidence_score` (number, 0..1) and `keywords` (array of strings, maxItems 3).

Replies are validated with `jsonschema` when it is installed, else with the small
validator here (type, properties, required, additionalProperties, items, enum, const,
minimum/maximum, exclusive bounds, minLength/maxLength, minItems/maxItems, anyOf/oneOf).
"""
from __future__ import annotations

import re
from typing import Any

from contracts.api import LLMLabeling

# Fields that can stand for the label when a custom shape has no `label`.
LABEL_FIELDS = ("label", "name", "title", "category", "theme", "topic", "cluster_name", "category_name")


def default_item_schema(include_summary: bool, include_keywords: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"label": {"type": "string", "minLength": 1, "maxLength": 120}}
    required = ["label"]
    if include_summary:
        properties["summary"] = {"type": "string"}
        required.append("summary")
    if include_keywords:
        properties["keywords"] = {"type": "array", "items": {"type": "string"}, "maxItems": 15}
        required.append("keywords")
    return {"type": "object", "properties": properties, "required": required}


def item_schema(config: LLMLabeling) -> dict[str, Any]:
    """The schema one cluster's entry must match. A custom prompt without a shape sets
    its own format (the reference's examples ask for label and keywords only), so
    then only `label` is required; summary and keywords are used when given."""
    shape = config.response_shape
    if shape is None:
        schema = default_item_schema(config.include_summary, config.include_keywords)
        if config.custom_prompt:
            schema["required"] = ["label"]
        return schema
    if isinstance(shape, dict):
        return shape
    return schema_from_description(shape)


def label_of(output: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """The label a (validated) output gives: `label`, a label-like field, else the first
    string property of the schema."""
    for key in LABEL_FIELDS:
        value = output.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    for key, prop in (schema.get("properties") or {}).items():
        value = output.get(key)
        if isinstance(prop, dict) and prop.get("type") == "string" and isinstance(value, str) and value.strip():
            return value.strip()
    return None


# ----------------------------------------------------------------- description -> schema

_VERBS = {"extract", "generate", "give", "provide", "return", "include", "identify", "list", "output",
          "produce", "create", "determine", "assign", "write", "add", "also", "with", "plus", "an", "a",
          "the", "its", "their", "each", "cluster", "clusters", "cluster's", "of", "for", "me"}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10}
_SCORE_WORDS = ("score", "confidence", "probability", "likelihood", "ratio", "percentage", "rating",
                "weight", "relevance")
_INT_WORDS = ("count", "number of", "how many", "size", "rank", "year", "age")
_BOOL_PREFIXES = ("is ", "has ", "whether ", "contains ", "flag")
_LIST_WORDS = ("keywords", "terms", "tags", "entities", "topics", "phrases", "examples", "themes", "items",
               "names", "words", "list of", "array of", "subtopics", "aspects", "products", "brands")


def _split_fields(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text.strip().rstrip("."))
    # Protect separators inside parentheses: "(positive/negative, neutral)".
    depth, parts, current = 0, [], ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch in ",;" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    out: list[str] = []
    for part in parts:
        # " and " separates fields, except inside "between 0 and 1".
        protected = re.sub(r"between (\S+) and (\S+)", r"between \1 AND_ \2", part, flags=re.I)
        for piece in re.split(r"\band\b", protected):
            piece = piece.replace("AND_ ", "and ").strip()
            if piece:
                out.append(piece)
    return out


def _field(phrase: str) -> tuple[str, dict[str, Any]] | None:
    lower = phrase.lower()
    prop: dict[str, Any] = {}
    enum: list[str] | None = None
    paren = re.search(r"\(([^)]*)\)", phrase)
    if paren:
        inner = paren.group(1)
        if re.search(r"[/|]|\bor\b", inner) and not re.search(r"\d", inner):
            enum = [v.strip().strip("'\"") for v in re.split(r"[/|,]|\bor\b", inner) if v.strip()]
        lower = lower.replace(paren.group(0).lower(), " " + inner.lower() + " ")
    low = high = None
    rng = re.search(r"(-?\d+(?:\.\d+)?)\s*(?:-|to|and|–)\s*(-?\d+(?:\.\d+)?)", lower)
    if rng:
        low, high = float(rng.group(1)), float(rng.group(2))
    count = None
    m = re.search(r"\b(?:top|up to|at most|max(?:imum)?|first)\s+(\d+|" + "|".join(_NUMBER_WORDS) + r")\b", lower)
    if m:
        count = int(m.group(1)) if m.group(1).isdigit() else _NUMBER_WORDS[m.group(1)]

    if enum:
        prop = {"type": "string", "enum": enum}
    elif lower.startswith(_BOOL_PREFIXES) or lower.startswith("whether"):
        prop = {"type": "boolean"}
    elif any(re.search(rf"\b{w}\b", lower) for w in _INT_WORDS):
        prop = {"type": "integer"}
    elif any(w in lower for w in _LIST_WORDS) or count is not None:
        prop = {"type": "array", "items": {"type": "string"}}
        if count is not None:
            prop["maxItems"] = count
    elif any(w in lower for w in _SCORE_WORDS) or rng:
        prop = {"type": "number"}
        if rng:
            prop.update(minimum=low, maximum=high)
    else:
        prop = {"type": "string"}

    # The name: what is left once verbs, ranges, counts and fillers are gone.
    name_text = re.sub(r"\([^)]*\)", " ", phrase.lower())
    name_text = re.sub(r"between\s+\S+\s+and\s+\S+|from\s+\S+\s+to\s+\S+|-?\d+(\.\d+)?\s*(-|to)\s*-?\d+(\.\d+)?", " ",
                       name_text)
    name_text = re.sub(r"\b(top|up to|at most|max(imum)?|first)\s+(\d+|" + "|".join(_NUMBER_WORDS) + r")\b", " ",
                       name_text)
    name_text = re.sub(r"\b(list|array|set) of\b", " ", name_text)
    words = [w for w in re.findall(r"[a-z][a-z0-9_']*", name_text) if w not in _VERBS]
    if prop["type"] == "array" and len(words) > 1 and words[-1] in {w.split()[-1] for w in _LIST_WORDS}:
        words = words[-1:] if words[0] in ("representative", "main", "key", "top", "relevant") else words
    if prop["type"] == "boolean":
        words = [w for w in words if w not in ("whether", "it", "they", "this", "is", "are", "has", "have")]
        words = ["is", *words[-2:]] if words else words
    if prop["type"] == "integer":
        if "number" in words or "how" in words:
            words = [w for w in words if w not in ("number", "how", "many")] + ["count"]
    words = words[-3:]
    if not words:
        return None
    name = "_".join(words).replace("'", "")
    if prop.get("type") == "array" and words[0] in ("representative", "main", "top"):
        name = "_".join(words[1:]) or name
    return name, prop


def schema_from_description(description: str) -> dict[str, Any]:
    """A JSON schema for a plain-language description of the wanted fields."""
    properties: dict[str, Any] = {}
    for phrase in _split_fields(description):
        found = _field(phrase)
        if found is None:
            continue
        name, prop = found
        prop["description"] = phrase.strip()
        properties.setdefault(name, prop)
    if not properties:
        return default_item_schema(True, True)
    return {"type": "object", "properties": properties, "required": list(properties)}


# --------------------------------------------------------------------------- validate

def validate(instance: Any, schema: dict[str, Any]) -> list[str]:
    """The ways `instance` fails `schema` (empty when it conforms)."""
    try:
        import jsonschema  # optional: the full draft when installed
    except ImportError:
        return _validate(instance, schema, "$")
    validator_cls = jsonschema.validators.validator_for(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
            for e in validator_cls(schema).iter_errors(instance)]


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _validate(value: Any, schema: Any, where: str) -> list[str]:
    if schema is False:
        return [f"{where}: not allowed"]
    if not isinstance(schema, dict):
        return []
    errors: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        types = expected if isinstance(expected, list) else [expected]
        if not any(_TYPES.get(t, lambda v: True)(value) for t in types):
            return [f"{where}: expected {' or '.join(types)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} is more than the maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{where}: {value} must be more than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errors.append(f"{where}: {value} must be less than {schema['exclusiveMaximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            errors.append(f"{where}: does not match {schema['pattern']!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                errors.extend(_validate(item, items, f"{where}[{i}]"))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                errors.append(f"{where}: missing required property {key!r}")
        for key, sub in properties.items():
            if key in value:
                errors.extend(_validate(value[key], sub, f"{where}.{key}"))
        extra = schema.get("additionalProperties", True)
        for key in value.keys() - properties.keys():
            if extra is False:
                errors.append(f"{where}: unexpected property {key!r}")
            elif isinstance(extra, dict):
                errors.extend(_validate(value[key], extra, f"{where}.{key}"))
    if "anyOf" in schema and all(_validate(value, s, where) for s in schema["anyOf"]):
        errors.append(f"{where}: matches none of anyOf")
    if "oneOf" in schema and sum(not _validate(value, s, where) for s in schema["oneOf"]) != 1:
        errors.append(f"{where}: must match exactly one of oneOf")
    if "allOf" in schema:
        for s in schema["allOf"]:
            errors.extend(_validate(value, s, where))
    return errors
