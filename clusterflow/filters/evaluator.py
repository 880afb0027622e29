"""The Python evaluator: a filter applied to one payload in this process. The test
oracle for the SQL compiler (same prepared tree, same answers)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


from clusterflow.filters.grammar import (
    _MISSING,
    _ascii_lower,
    _is_number,
    _decimal,
    _json_equal,
    _resolve,
    _words,
    _Leaf,
    _Node,
    _ORDER_OPS,
    _STRING_OPS,
    _prepare_root,
)
from contracts.api import (
    FilterOperator,
    LogicalOperator,
)


# ------------------------------------------------------------------------ Python


def _eval_eq(v: Any, target: Any, cs: bool) -> bool:
    if v is _MISSING:
        return False
    if isinstance(target, str) and not cs:
        return isinstance(v, str) and _ascii_lower(v) == _ascii_lower(target)
    return _json_equal(v, target)


def _eval_leaf(leaf: _Leaf, payload: Any) -> bool:
    v = _resolve(payload, leaf.path)
    op, target, cs = leaf.op, leaf.value, leaf.case_sensitive
    if op is FilterOperator.eq:
        return _eval_eq(v, target, cs)
    if op is FilterOperator.ne:
        return not _eval_eq(v, target, cs)
    if op is FilterOperator.in_:
        return any(_eval_eq(v, t, cs) for t in target)
    if op is FilterOperator.nin:
        return not any(_eval_eq(v, t, cs) for t in target)
    if op in _ORDER_OPS:
        if isinstance(target, str):
            if not isinstance(v, str):
                return False
            a, b = v, target
        else:
            if not _is_number(v):
                return False
            a, b = _decimal(v), _decimal(target)
        return {
            FilterOperator.gt: a > b,
            FilterOperator.lt: a < b,
            FilterOperator.gte: a >= b,
            FilterOperator.lte: a <= b,
        }[op]
    if op is FilterOperator.contains:
        if isinstance(v, str):
            if not isinstance(target, str):
                return False
            if cs:
                return target in v
            return _ascii_lower(target) in _ascii_lower(v)
        if isinstance(v, list):
            return any(_eval_eq(e, target, cs) for e in v)
        return False
    if op in _STRING_OPS:
        if not isinstance(v, str):
            return False
        s, t = (v, target) if cs else (_ascii_lower(v), _ascii_lower(target))
        return s.startswith(t) if op is FilterOperator.starts_with else s.endswith(t)
    if op is FilterOperator.regex:
        assert leaf.regex is not None
        return isinstance(v, str) and leaf.regex.python.search(v) is not None
    if op is FilterOperator.exists:
        return (v is not _MISSING) is target
    if op is FilterOperator.is_null:
        return v is not _MISSING and (v is None) is target
    if op is FilterOperator.text:
        return isinstance(v, str) and set(leaf.words) <= set(_words(v))
    if op is FilterOperator.phrase:
        if not isinstance(v, str):
            return False
        doc, n = _words(v), len(leaf.words)
        return any(tuple(doc[i : i + n]) == leaf.words for i in range(len(doc) - n + 1))
    raise AssertionError(f"unhandled operator {op}")


def _eval_tree(node: _Node, leaf_eval: Callable[[_Leaf], bool]) -> bool:
    if isinstance(node, _Leaf):
        return leaf_eval(node)
    results = (_eval_tree(item, leaf_eval) for item in node.items)
    if node.kind == "and":
        return all(results)
    if node.kind == "or":
        return any(results)
    return not any(results)  # "nor": NOT's items must all be false


def _eval_node(node: _Node, payload: Any) -> bool:
    return _eval_tree(node, lambda leaf: _eval_leaf(leaf, payload))


def python_predicate(
    flt: LogicalOperator | Mapping[str, Any] | None,
) -> Callable[[Any], bool]:
    """`evaluate` with the filter checked and prepared once: a function of the
    payload. Raises FilterError for an invalid filter."""
    node = _prepare_root(flt)
    if node is None:
        return lambda payload: True
    return lambda payload: _eval_node(node, payload)


def evaluate(flt: LogicalOperator | Mapping[str, Any] | None, payload: Any) -> bool:
    """Whether a document payload (a dict, as json.loads gives it; Decimal numbers
    are fine) matches the filter -- the same predicate `compile_filter` builds in SQL.
    Raises FilterError for an invalid filter.

    The regex operator runs on Python's backtracking `re` here, which can take
    exponential time on adversarial patterns (PostgreSQL's engine does not): prefer
    the SQL path for untrusted filters over large data."""
    return python_predicate(flt)(payload)
