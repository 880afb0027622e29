"""The SQL compiler: a filter as one PostgreSQL boolean over a JSONB payload column."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    and_,
    any_,
    case,
    cast,
    collate,
    column,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    table,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TEXT

from clusterflow.filters.grammar import _ascii_lower, _phrase_pattern, _Leaf, _Node, _ORDER_OPS, _prepare_root
from contracts.api import (
    FilterOperator,
    LogicalOperator,
)


# --------------------------------------------------------------------------- SQL


def _path_param(path: Sequence[str]) -> ColumnElement[Any]:
    return literal(list(path), ARRAY(TEXT))


def _json_param(value: Any) -> ColumnElement[Any]:
    return cast(literal(json.dumps(value), TEXT), JSONB)


def _text_param(value: str) -> ColumnElement[Any]:
    return literal(value, TEXT)


def _c(expr: ColumnElement[Any]) -> ColumnElement[Any]:
    return collate(expr, "C")


def _typeof(j: ColumnElement[Any], kind: str) -> ColumnElement[bool]:
    return func.jsonb_typeof(j) == literal(kind, TEXT)


class _Target:
    """One JSON value reached by a path: as jsonb (`j`) and as text (`t`, the
    unquoted string when it is a JSON string)."""

    def __init__(self, j: ColumnElement[Any], t: ColumnElement[Any]) -> None:
        self.j = j
        self.t = t

    @classmethod
    def at(cls, payload: ColumnElement[Any], path: Sequence[str]) -> _Target:
        j = payload.op("#>", return_type=JSONB)(_path_param(path))
        t = payload.op("#>>", return_type=TEXT)(_path_param(path))
        return cls(j, t)

    @classmethod
    def whole(cls, j: ColumnElement[Any]) -> _Target:
        return cls(j, j.op("#>>", return_type=TEXT)(_path_param(())))

    def is_string(self) -> ColumnElement[bool]:
        return _typeof(self.j, "string")

    def folded(self, cs: bool) -> ColumnElement[Any]:
        """The string under COLLATE "C", ASCII-lowercased unless case-sensitive."""
        return _c(self.t) if cs else func.lower(_c(self.t), type_=TEXT)


def _fold(s: str, cs: bool) -> str:
    return s if cs else _ascii_lower(s)


def _sql_eq(x: _Target, target: Any, cs: bool) -> ColumnElement[bool]:
    if isinstance(target, str) and not cs:
        return and_(x.is_string(), x.folded(False) == _text_param(_ascii_lower(target)))
    return x.j == _json_param(target)


def _sql_in(x: _Target, targets: list[Any], cs: bool) -> ColumnElement[bool]:
    folded = [t for t in targets if isinstance(t, str) and not cs]
    exact = [t for t in targets if not (isinstance(t, str) and not cs)]
    parts: list[ColumnElement[bool]] = []
    if folded:
        lowered = literal([_ascii_lower(t) for t in folded], ARRAY(TEXT))
        parts.append(and_(x.is_string(), x.folded(False) == any_(lowered)))
    if exact:
        as_json = cast(literal([json.dumps(t) for t in exact], ARRAY(TEXT)), ARRAY(JSONB))
        parts.append(x.j == any_(as_json))
    return or_(*parts) if parts else false()


def _sql_contains(x: _Target, target: Any, cs: bool) -> ColumnElement[bool]:
    is_array = _typeof(x.j, "array")
    if isinstance(target, (dict, list)):
        # Containers: jsonb containment is weaker than equality ([[1, 2]] @> [[1]]),
        # so look for an equal element (a subquery per row: slower, and rare).
        array = case((is_array, x.j), else_=cast(literal("[]", TEXT), JSONB))
        elements = func.jsonb_array_elements(array).table_valued(
            column("value", JSONB), joins_implicitly=True
        )
        return (
            select(literal(1))
            .select_from(elements)
            .where(_sql_eq(_Target.whole(elements.c.value), target, cs))
            .exists()
        )
    # Scalars: `array @> [scalar]` holds exactly when some top-level element is eq
    # the scalar (numbers by value, strings byte for byte); GIN-indexable.
    if isinstance(target, str) and not cs:
        # Lowering the array's JSON text lowercases A-Z inside its strings and
        # nothing else that matters: jsonb prints true/false/null in lower case,
        # numbers without exponents, and escapes as \n, \t, \u001f ...
        folded = cast(func.lower(collate(cast(x.j, TEXT), "C"), type_=TEXT), JSONB)
        member = and_(is_array, folded.op("@>", is_comparison=True)(
            _json_param([_ascii_lower(target)])
        ))
    else:
        member = and_(is_array, x.j.op("@>", is_comparison=True)(_json_param([target])))
    if not isinstance(target, str):
        return member
    substring = and_(
        x.is_string(), func.strpos(x.folded(cs), _text_param(_fold(target, cs))) > 0
    )
    return or_(substring, member)


def _sql_leaf(leaf: _Leaf, payload: ColumnElement[Any]) -> ColumnElement[bool]:
    x = _Target.at(payload, leaf.path)
    op, target, cs = leaf.op, leaf.value, leaf.case_sensitive
    if op is FilterOperator.exists:
        return x.j.is_not(None) if target else x.j.is_(None)
    if op is FilterOperator.is_null:
        cond = _typeof(x.j, "null") if target else func.jsonb_typeof(x.j) != literal("null", TEXT)
    elif op in (FilterOperator.eq, FilterOperator.ne):
        cond = _sql_eq(x, target, cs)
    elif op in (FilterOperator.in_, FilterOperator.nin):
        cond = _sql_in(x, target, cs)
    elif op in _ORDER_OPS:
        compare: Callable[[Any, Any], ColumnElement[bool]] = {
            FilterOperator.gt: lambda a, b: a > b,
            FilterOperator.lt: lambda a, b: a < b,
            FilterOperator.gte: lambda a, b: a >= b,
            FilterOperator.lte: lambda a, b: a <= b,
        }[op]
        if isinstance(target, str):
            cond = and_(x.is_string(), compare(_c(x.t), _text_param(target)))
        else:  # jsonb orders numbers by value; the type check keeps other types out
            cond = and_(_typeof(x.j, "number"), compare(x.j, _json_param(target)))
    elif op is FilterOperator.contains:
        cond = _sql_contains(x, target, cs)
    elif op is FilterOperator.starts_with:
        cond = and_(
            x.is_string(),
            func.starts_with(x.folded(cs), _text_param(_fold(target, cs)), type_=Boolean),
        )
    elif op is FilterOperator.ends_with:
        cond = and_(
            x.is_string(),
            func.right(x.folded(cs), literal(len(target)), type_=TEXT)
            == _text_param(_fold(target, cs)),
        )
    elif op is FilterOperator.regex:
        assert leaf.regex is not None
        match_op = "~" if cs else "~*"
        cond = and_(
            x.is_string(),
            _c(x.t).op(match_op, is_comparison=True)(_text_param(leaf.regex.postgres)),
        )
    elif op in (FilterOperator.text, FilterOperator.phrase):
        patterns = (
            [_phrase_pattern([w]) for w in leaf.words]
            if op is FilterOperator.text
            else [_phrase_pattern(leaf.words)]
        )
        lowered = x.folded(False)
        cond = and_(
            x.is_string(),
            *(lowered.op("~", is_comparison=True)(_text_param(p)) for p in patterns),
        )
    else:  # pragma: no cover
        raise AssertionError(f"unhandled operator {op}")
    # Two-valued: a missing field (SQL NULL) is false, so NOT/ne/nin stay exact.
    cond = func.coalesce(cond, false(), type_=Boolean)
    if op in (FilterOperator.ne, FilterOperator.nin):
        return not_(cond)
    return cond


def _sql_tree(node: _Node, leaf_sql: Callable[[_Leaf], ColumnElement[bool]]) -> ColumnElement[bool]:
    if isinstance(node, _Leaf):
        return leaf_sql(node)
    items = [_sql_tree(item, leaf_sql) for item in node.items]
    if node.kind == "and":
        return and_(*items) if items else true()
    if node.kind == "or":
        return or_(*items) if items else false()
    return not_(or_(*items)) if items else true()


def _sql_node(node: _Node, payload: ColumnElement[Any]) -> ColumnElement[bool]:
    return _sql_tree(node, lambda leaf: _sql_leaf(leaf, payload))


def compile_filter(
    flt: LogicalOperator | Mapping[str, Any] | None, payload: ColumnElement[Any]
) -> ColumnElement[bool]:
    """The filter as a SQLAlchemy boolean over `payload`, a JSONB column expression
    (e.g. `documents.c.payload`); `true()` for no filter. User values and paths are
    bound parameters only. Raises FilterError for an invalid filter."""
    node = _prepare_root(flt)
    if node is None:
        return true()
    return _sql_node(node, payload)


_DUMMY_PAYLOAD = table("documents", column("payload", JSONB)).c.payload


def validate_filter(flt: LogicalOperator | Mapping[str, Any] | None) -> None:
    """Raise FilterError if `flt` cannot be compiled (call it at request time)."""
    compile_filter(flt, _DUMMY_PAYLOAD)
