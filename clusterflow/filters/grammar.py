"""The filter grammar: JSON values and paths, the checks a filter passes, and the
prepared tree (conditions resolved once) that the evaluator and the SQL compiler walk."""
from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Union

from pydantic import ValidationError

from clusterflow.filters.errors import FilterError
from clusterflow.filters.regex import _Regex, _compile_regex
from contracts.api import (
    MAX_FILTER_DEPTH,
    DynamicValue,
    FilterCondition,
    FilterOperator,
    LogicalOperator,
)


# ------------------------------------------------------------------- JSON helpers

_MISSING: Any = object()  # a field that is not there (distinct from JSON null)

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _ascii_lower(s: str) -> str:
    """Lowercase A-Z only: PostgreSQL's lower() under COLLATE "C"."""
    return s.translate(_ASCII_LOWER)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def _decimal(v: Any) -> Decimal:
    """A JSON number's exact decimal value, as PostgreSQL's jsonb numeric has it.

    A float stands for the text json.dumps writes for it (its repr), which is what
    PostgreSQL parses."""
    if isinstance(v, float):
        return Decimal(repr(v))
    return Decimal(v)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if _is_number(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _json_equal(a: Any, b: Any) -> bool:
    """jsonb equality: same type; numbers by value; arrays in order; objects by key."""
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        return False
    if ka == "number":
        return _decimal(a) == _decimal(b)
    if ka == "array":
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if ka == "object":
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b  # null, boolean, string


_C_SPACE = " \t\n\v\f\r"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)\Z", re.ASCII)


def _array_index(segment: str, length: int) -> int | None:
    """The element a path segment selects in an array of `length`, as PostgreSQL's
    jsonb `#>` reads it (strtoint: C strtol syntax, int range; negative from the
    end); None when it selects nothing."""
    m = _STRTOL.match(segment)
    if m is None:
        return None
    index = int(m.group(1))
    if index < _INT_MIN or index > _INT_MAX:
        return None
    if index < 0:
        if index == _INT_MIN or -index > length:
            return None
        index += length
    return index if index < length else None


def _resolve(payload: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in `payload`, or _MISSING."""
    current = payload
    for segment in path:
        if isinstance(current, Mapping):
            if segment not in current:
                return _MISSING
            current = current[segment]
        elif isinstance(current, list):
            index = _array_index(segment, len(current))
            if index is None:
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


# --------------------------------------------------------------------- validation


def _check_text(s: str, what: str, where: str) -> None:
    if "\x00" in s:
        raise FilterError(
            f"{where}: {what} contains a NUL character (\\u0000), which PostgreSQL "
            "text cannot hold; remove it"
        )
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(
            f"{where}: {what} contains a lone surrogate code point, which is not "
            "valid text; send well-formed UTF-8 / JSON strings"
        ) from None


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    """`value` must be plain JSON (and no DynamicValue anywhere inside)."""
    if depth > 64:
        raise FilterError(f"{where}: value is nested more than 64 levels deep; flatten it")
    if isinstance(value, DynamicValue) or (
        isinstance(value, dict) and value.get("type") == "dynamic"
    ):
        dyn_field = value.field if isinstance(value, DynamicValue) else value.get("field")
        raise FilterError(
            f"{where}: a DynamicValue (field {dyn_field!r}) cannot be used here: there "
            "are no runtime inputs to resolve it from when a clustering runs; put the "
            "literal value in the filter instead"
        )
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(
                f"{where}: numbers must be finite (JSON has no NaN or Infinity), got {value}"
            )
        return
    if isinstance(value, str):
        _check_text(value, "a string in the value", where)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FilterError(f"{where}: object keys must be strings, got {key!r}")
            _check_text(key, "an object key in the value", where)
            _check_json(item, f"{where}.{key}", depth + 1)
        return
    raise FilterError(
        f"{where}: value of type {type(value).__name__} is not JSON; use null, a "
        "boolean, a number, a string, a list or an object"
    )


def _parse_path(field: str, where: str) -> tuple[str, ...]:
    if not isinstance(field, str) or not field:
        raise FilterError(
            f"{where}.field: must be a non-empty dotted path such as 'metadata.title'"
        )
    _check_text(field, f"field {field!r}", where)
    segments = tuple(field.split("."))
    if any(s == "" for s in segments):
        raise FilterError(
            f"{where}.field: {field!r} has an empty segment (a leading, trailing or "
            "doubled '.'); write the path as dot-separated keys, e.g. 'metadata.title'"
        )
    return segments


# -------------------------------------------------------------------------- words

# Separator characters (see the module docstring); everything else is a word char.
_SEPARATOR_RANGES = (
    (0x01, 0x2F),
    (0x3A, 0x40),
    (0x5B, 0x60),
    (0x7B, 0x7F),
    (0x80, 0xBF),
    (0xD7, 0xD7),
    (0xF7, 0xF7),
    (0x2000, 0x206F),
    (0x3000, 0x303F),
)
# \uXXXX escapes read the same in Python and PostgreSQL regexes.
_SEP = "[" + "".join(
    f"\\u{lo:04x}" + (f"-\\u{hi:04x}" if hi != lo else "") for lo, hi in _SEPARATOR_RANGES
) + "]"
_SEP_RUN = re.compile(_SEP + "+")


def _words(s: str) -> list[str]:
    """The ASCII-lowercased words of `s`."""
    return [w for w in _SEP_RUN.split(_ascii_lower(s)) if w]


def _phrase_pattern(words: Sequence[str]) -> str:
    """A regex (same text for Python and PostgreSQL) matching the words as
    consecutive whole words of an ASCII-lowercased string. Words hold no regex
    metacharacter: all ASCII punctuation is a separator."""
    return f"(^|{_SEP})" + f"{_SEP}+".join(words) + f"($|{_SEP})"


# ------------------------------------------------------------- the prepared tree


@dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]
    op: FilterOperator
    value: Any
    case_sensitive: bool
    regex: _Regex | None = None
    words: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Bool:
    kind: str  # "and" | "or" | "nor"
    items: tuple[_Node, ...]


_Node = Union[_Leaf, _Bool]

_ORDER_OPS = {FilterOperator.gt, FilterOperator.lt, FilterOperator.gte, FilterOperator.lte}
_STRING_OPS = {FilterOperator.starts_with, FilterOperator.ends_with}


def _prepare_condition(cond: FilterCondition, cs: bool, where: str) -> _Leaf:
    if cond.case_sensitive is not None:  # a condition's own setting beats the operator's
        cs = cond.case_sensitive
    path = _parse_path(cond.field, where)
    op = FilterOperator(cond.operator)
    value = cond.value
    vwhere = f"{where}.value"
    _check_json(value, vwhere)
    if op in _ORDER_OPS:
        if not (_is_number(value) or isinstance(value, str)):
            raise FilterError(
                f"{vwhere}: operator {op} needs a number or a string, got "
                f"{_kind(value)} {json.dumps(value)[:80]}"
            )
    elif op in (FilterOperator.in_, FilterOperator.nin):
        if not isinstance(value, list):
            raise FilterError(
                f"{vwhere}: operator {op} needs a list of values, got {_kind(value)}; "
                f"write e.g. [{json.dumps(value)[:60]}] (or use eq/ne for one value)"
            )
    elif op in _STRING_OPS:
        if not isinstance(value, str):
            raise FilterError(f"{vwhere}: operator {op} needs a string, got {_kind(value)}")
    elif op is FilterOperator.regex:
        if not isinstance(value, str):
            raise FilterError(
                f"{vwhere}: operator regex needs a pattern string, got {_kind(value)}"
            )
        return _Leaf(path, op, value, cs, regex=_compile_regex(value, cs, vwhere))
    elif op in (FilterOperator.exists, FilterOperator.is_null):
        if not isinstance(value, bool):
            raise FilterError(
                f"{vwhere}: operator {op} needs true or false, got {_kind(value)}"
            )
    elif op in (FilterOperator.text, FilterOperator.phrase):
        if not isinstance(value, str):
            raise FilterError(f"{vwhere}: operator {op} needs a string, got {_kind(value)}")
        words = _words(value)
        if not words:
            raise FilterError(
                f"{vwhere}: operator {op} needs at least one word (letters or digits), "
                f"got {value!r}"
            )
        if op is FilterOperator.text:
            words = list(dict.fromkeys(words))
        return _Leaf(path, op, value, cs, words=tuple(words))
    return _Leaf(path, op, value, cs)


def _prepare(flt: LogicalOperator, inherited_cs: bool, where: str, level: int) -> _Node:
    if level > MAX_FILTER_DEPTH:
        raise FilterError(
            f"{where or 'filter'}: filters may nest at most {MAX_FILTER_DEPTH} "
            "logical operators deep; flatten the filter (e.g. merge nested ANDs)"
        )
    cs = inherited_cs
    if "case_sensitive" in flt.model_fields_set and flt.case_sensitive is not None:
        cs = flt.case_sensitive
    prefix = f"{where}." if where else ""
    parts: list[_Node] = []
    for key in ("AND", "OR", "NOT"):
        items = getattr(flt, key)
        if items is None:
            continue
        nodes = []
        for i, item in enumerate(items):
            iw = f"{prefix}{key}[{i}]"
            if isinstance(item, LogicalOperator):
                nodes.append(_prepare(item, cs, iw, level + 1))
            elif isinstance(item, FilterCondition):
                nodes.append(_prepare_condition(item, cs, iw))
            else:
                raise FilterError(f"{iw}: not a filter condition or logical operator")
        kind = {"AND": "and", "OR": "or", "NOT": "nor"}[key]
        parts.append(_Bool(kind, tuple(nodes)))
    return _Bool("and", tuple(parts))


def _as_filter(flt: LogicalOperator | Mapping[str, Any] | None) -> LogicalOperator | None:
    if flt is None or isinstance(flt, LogicalOperator):
        return flt
    if isinstance(flt, Mapping):
        try:
            return LogicalOperator.model_validate(dict(flt))
        except ValidationError as exc:
            raise FilterError(f"filter is not a valid LogicalOperator: {exc}") from None
    raise FilterError(f"filter must be a LogicalOperator object, got {type(flt).__name__}")


def _prepare_root(flt: LogicalOperator | Mapping[str, Any] | None) -> _Node | None:
    model = _as_filter(flt)
    if model is None:
        return None
    return _prepare(model, False, "", 1)
