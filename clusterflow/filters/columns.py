"""Column filters: the same grammar over typed columns (the list routes' `filters`
and `search`), compiled to SQL and, for tests, evaluated in Python."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, TEXT

from clusterflow.filters.errors import FilterError
from clusterflow.filters.grammar import _is_number, _kind, _Leaf, _Node, _prepare, _as_filter
from clusterflow.filters.evaluator import _eval_leaf, _eval_tree
from clusterflow.filters.sql import _sql_leaf, _sql_tree
from contracts.api import (
    FilterCondition,
    FilterOperator,
    LogicalOperator,
)


# ------------------------------------------------------------------- column filters
#
# The same grammar over a list's columns instead of a document's payload: what the
# clusters, executions and tasks lists filter on. `fields` names each filterable
# field's SQL expression and kind; every condition is then the leaf above, compiled
# over that one value as JSON (`to_jsonb(column)`; SQL NULL as JSON null), so the
# operators mean exactly what they mean on documents (case_sensitive included).
# On top of the document grammar: a field outside `fields` or an operator its kind does
# not take is a ColumnFilterError naming the field and what it allows; `datetime`
# fields take ISO 8601 strings (compared as instants; a naive one is UTC); `array`
# fields (a list of strings, e.g. a cluster's collection ids) match when an element
# does (eq/contains: some element equals; in: some element is one of; ne/nin: none
# does); `aliases` let one value stand for several (an execution's lowercase status
# for the task statuses it covers).

ColumnKind = str  # "string" | "number" | "datetime" | "array"

_COLUMN_OPS: dict[str, tuple[FilterOperator, ...]] = {
    "string": (FilterOperator.eq, FilterOperator.ne, FilterOperator.in_, FilterOperator.nin, FilterOperator.gt,
               FilterOperator.gte, FilterOperator.lt, FilterOperator.lte, FilterOperator.contains,
               FilterOperator.starts_with, FilterOperator.ends_with, FilterOperator.regex, FilterOperator.text,
               FilterOperator.phrase, FilterOperator.is_null),
    "number": (FilterOperator.eq, FilterOperator.ne, FilterOperator.in_, FilterOperator.nin, FilterOperator.gt,
               FilterOperator.gte, FilterOperator.lt, FilterOperator.lte, FilterOperator.is_null),
    "array": (FilterOperator.eq, FilterOperator.ne, FilterOperator.in_, FilterOperator.nin, FilterOperator.contains),
}
_COLUMN_OPS["datetime"] = _COLUMN_OPS["number"]


class ColumnFilterError(FilterError):
    """A list filter naming a field the list lacks, or an operator or value the field
    does not take; `field` and `allowed` (the fields, or the field's operators) say
    what to use instead."""

    def __init__(self, message: str, *, field: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.field = field
        self.allowed = list(allowed)


@dataclass(frozen=True)
class ColumnField:
    """One filterable field of a list: its SQL expression and kind. `jsonb`: the
    expression is jsonb already (a key of a JSONB column); `ops`: fewer operators than
    the kind takes; `aliases`: values that stand for several (eq/in/ne/nin only)."""

    expr: Any
    kind: ColumnKind = "string"
    jsonb: bool = False
    ops: tuple[FilterOperator, ...] | None = None
    aliases: Mapping[str, tuple[str, ...]] | None = None

    @property
    def operators(self) -> tuple[FilterOperator, ...]:
        return self.ops or _COLUMN_OPS[self.kind]

    def json(self) -> ColumnElement[Any]:
        """The field's value as jsonb, JSON null for SQL NULL (so is_null, eq null)."""
        expr = self.expr
        if self.kind == "datetime":
            expr = func.extract("epoch", expr)
        if not self.jsonb:
            expr = func.to_jsonb(expr)
        return func.coalesce(expr, cast(literal("null", TEXT), JSONB), type_=JSONB)


def _instant(value: Any, where: str, name: str) -> float:
    if isinstance(value, str):
        from datetime import datetime, timezone

        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()
    raise ColumnFilterError(f"{where}.value: {name} takes ISO 8601 date-times such as \"2026-12-01T00:00:00Z\", "
                            f"got {json.dumps(value)[:80]}", field=name, allowed=["ISO 8601 date-time"])


def _check_column_condition(cond: FilterCondition, fields: Mapping[str, ColumnField], where: str, what: str) -> None:
    name = cond.field
    spec = fields.get(name)
    if spec is None:
        raise ColumnFilterError(f"{where}.field: {what} cannot be filtered by {name!r}; filter by one of "
                                f"{', '.join(sorted(fields))}", field=name, allowed=sorted(fields))
    op = FilterOperator(cond.operator)
    allowed = [o.value for o in spec.operators]
    if op not in spec.operators:
        raise ColumnFilterError(f"{where}.operator: operator {op.value} does not apply to {name} ({spec.kind}); "
                                f"use one of {', '.join(allowed)}", field=name, allowed=allowed)
    values = cond.value if op in (FilterOperator.in_, FilterOperator.nin) and isinstance(cond.value, list) \
        else [cond.value]
    if op is FilterOperator.is_null:
        return  # the document grammar checks its boolean
    for v in values:
        if spec.kind == "datetime":
            _instant(v, where, name)
        elif spec.kind == "number" and not _is_number(v):
            raise ColumnFilterError(f"{where}.value: {name} takes numbers, got {_kind(v)} {json.dumps(v)[:80]}",
                                    field=name, allowed=["number"])
        elif spec.kind in ("string", "array") and not isinstance(v, str):
            raise ColumnFilterError(f"{where}.value: {name} takes strings, got {_kind(v)} {json.dumps(v)[:80]}",
                                    field=name, allowed=["string"])


def _check_columns(flt: LogicalOperator, fields: Mapping[str, ColumnField], where: str, what: str) -> None:
    prefix = f"{where}." if where else ""
    for key in ("AND", "OR", "NOT"):
        for i, item in enumerate(getattr(flt, key) or ()):
            iw = f"{prefix}{key}[{i}]"
            if isinstance(item, LogicalOperator):
                _check_columns(item, fields, iw, what)
            else:
                _check_column_condition(item, fields, iw, what)


def _column_leaves(leaf: _Leaf, spec: ColumnField) -> tuple[list[_Leaf], bool]:
    """The leaf over the field's own value (path ()): leaves of which one must hold,
    and whether to negate that (ne/nin of an array field: no element is one of)."""
    op, value = leaf.op, leaf.value
    listed = op in (FilterOperator.in_, FilterOperator.nin)
    values = list(value) if listed else [value]
    if spec.aliases and op in (FilterOperator.eq, FilterOperator.ne, FilterOperator.in_, FilterOperator.nin):
        expanded = [w for v in values for w in (spec.aliases.get(v, (v,)) if isinstance(v, str) else (v,))]
        if expanded != values:
            op = FilterOperator.in_ if op in (FilterOperator.eq, FilterOperator.in_) else FilterOperator.nin
            values, listed = expanded, True
    if spec.kind == "datetime" and op is not FilterOperator.is_null:
        values = [_instant(v, "", "") for v in values]
    if spec.kind != "array" or op is FilterOperator.contains:
        return [_Leaf((), op, values if listed else values[0], leaf.case_sensitive, leaf.regex, leaf.words)], False
    negate = op in (FilterOperator.ne, FilterOperator.nin)
    return [_Leaf((), FilterOperator.contains, v, leaf.case_sensitive) for v in values], negate


def _column_root(flt: LogicalOperator | Mapping[str, Any] | None, fields: Mapping[str, ColumnField],
                 what: str) -> _Node | None:
    model = _as_filter(flt)
    if model is None:
        return None
    _check_columns(model, fields, "", what)
    return _prepare(model, False, "", 1)


def _column_sql(node: _Leaf, fields: Mapping[str, ColumnField]) -> ColumnElement[bool]:
    spec = fields[".".join(node.path)]
    leaves, negate = _column_leaves(node, spec)
    value = spec.json()
    held = or_(*(_sql_leaf(leaf, value) for leaf in leaves)) if leaves else false()
    return not_(held) if negate else held


def _column_eval(node: _Leaf, fields: Mapping[str, ColumnField], row: Mapping[str, Any]) -> bool:
    name = ".".join(node.path)
    spec = fields[name]
    value = row.get(name)
    if spec.kind == "datetime" and value is not None:
        value = value.timestamp() if hasattr(value, "timestamp") else _instant(value, "", name)
    leaves, negate = _column_leaves(node, spec)
    return any(_eval_leaf(leaf, value) for leaf in leaves) != negate


def compile_column_filter(flt: LogicalOperator | Mapping[str, Any] | None, fields: Mapping[str, ColumnField],
                          what: str = "this list") -> ColumnElement[bool]:
    """A list filter (the document grammar over `fields`) as a SQLAlchemy boolean;
    `true()` for none. Raises ColumnFilterError for a field or operator the list does
    not offer and FilterError for the rest (location and what to change in both)."""
    node = _column_root(flt, fields, what)
    return true() if node is None else _sql_tree(node, lambda leaf: _column_sql(leaf, fields))


def column_predicate(flt: LogicalOperator | Mapping[str, Any] | None, fields: Mapping[str, ColumnField],
                     what: str = "this list") -> Callable[[Mapping[str, Any]], bool]:
    """The same filter in Python over a row `{field name: value}` (datetime values as
    datetimes): the oracle of compile_column_filter."""
    node = _column_root(flt, fields, what)
    if node is None:
        return lambda row: True
    return lambda row: _eval_tree(node, lambda leaf: _column_eval(leaf, fields, row))


def search_filter(term: str | None, names: Sequence[str]) -> dict[str, Any] | None:
    """`search` as a list filter: a case-insensitive substring of any of `names`
    (compile it over `search_fields`, which lets every one of them take contains)."""
    if not term:
        return None
    return {"OR": [{"field": n, "operator": "contains", "value": term, "case_sensitive": False} for n in names]}


def search_fields(fields: Mapping[str, ColumnField], names: Sequence[str]) -> dict[str, ColumnField]:
    """The text fields `search` reads, as plain strings (a field whose filters take
    only eq/in, such as a status, is still searched by substring)."""
    from dataclasses import replace

    return {n: replace(fields[n], kind="string", ops=None, aliases=None) for n in names}
