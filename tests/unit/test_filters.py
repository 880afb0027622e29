"""Unit tests for clusterflow.filters: evaluate() semantics, FilterError cases, and
the compiled SQL's hygiene (bound parameters only). No I/O."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Integer, column, select, table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from clusterflow.filters import (
    MAX_REGEX_LENGTH,
    FilterError,
    compile_filter,
    evaluate,
    python_predicate,
    validate_filter,
)
from contracts.api import MAX_FILTER_DEPTH, DynamicValue, FilterCondition, LogicalOperator

DOC: dict[str, Any] = {
    "title": "Hello World",
    "name": "Ada Lovelace",
    "n": 5,
    "f": 2.5,
    "one": 1.0,
    "big": 10**23,
    "flag": True,
    "nothing": None,
    "tags": ["Red", "green", 3, None, {"k": 1}, [1, 2]],
    "meta": {"author": {"name": "Grace"}, "year": 1843, "lang": "EN"},
    "body": "The quick brown fox -- jumps over the lazy dog. Ünïcode Café!",
    "empty": "",
    "list_of_obj": [{"x": 1}, {"x": 2}],
}


def cond(field: str, operator: str, value: Any) -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value}


def ev(flt: dict[str, Any] | None, doc: dict[str, Any] = DOC) -> bool:
    if flt is None:
        return evaluate(None, doc)
    return evaluate(LogicalOperator.model_validate(flt), doc)


def one(field: str, operator: str, value: Any, doc: dict[str, Any] = DOC, **kw: Any) -> bool:
    return ev({"AND": [cond(field, operator, value)], **kw}, doc)


# ---------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("field", "operator", "value", "expected"),
    [
        # eq / ne
        ("n", "eq", 5, True),
        ("n", "eq", 5.0, True),
        ("one", "eq", 1, True),
        ("big", "eq", 1e23, True),  # decimal value of the float's repr, as jsonb has it
        ("n", "eq", "5", False),
        ("flag", "eq", True, True),
        ("flag", "eq", 1, False),  # booleans are not numbers
        ("one", "eq", True, False),
        ("title", "eq", "hello world", True),  # case-insensitive by default
        ("title", "eq", "Hello", False),
        ("nothing", "eq", None, True),
        ("missing", "eq", None, False),
        ("missing", "ne", None, True),
        ("missing", "ne", 1, True),  # ne is "not eq": true on a missing field
        ("n", "ne", 5, False),
        ("n", "ne", "5", True),
        ("meta.year", "eq", 1843, True),
        ("meta.author", "eq", {"name": "Grace"}, True),
        ("meta.author", "eq", {"name": "grace"}, False),  # nested strings: exact
        ("tags.5", "eq", [1, 2.0], True),
        ("tags.5", "eq", [2, 1], False),
        ("tags", "eq", "Red", False),
        # array indexes, as PostgreSQL's #> reads them
        ("tags.0", "eq", "red", True),
        ("tags.-1", "eq", [1, 2], True),
        ("tags.-6", "eq", "Red", True),
        ("tags.-7", "exists", True, False),
        ("tags.6", "exists", True, False),
        ("tags.01", "eq", "green", True),
        ("tags.+1", "eq", "green", True),
        ("tags. 1", "eq", "green", True),
        ("tags.1 ", "exists", True, False),
        ("tags.x", "exists", True, False),
        ("tags.4.k", "eq", 1, True),
        ("list_of_obj.1.x", "eq", 2, True),
        ("title.0", "exists", True, False),  # no path through a string
        ("nothing.x", "exists", True, False),
        # ordering
        ("n", "gt", 4, True),
        ("n", "gt", 5, False),
        ("n", "gte", 5.0, True),
        ("f", "lt", 3, True),
        ("f", "lte", 2.5, True),
        ("big", "gt", 99999999999999991611392, True),
        ("title", "gt", "Hello", True),
        ("title", "lt", "hello", True),  # code point order: "H" < "h"
        ("title", "gt", "hello", False),  # ordering is always case-sensitive
        ("n", "gt", "1", False),  # number field vs string value: no match
        ("title", "gt", 1, False),
        ("flag", "gt", 0, False),
        ("missing", "lt", 10, False),
        # in / nin
        ("n", "in", [1, 5], True),
        ("n", "in", [1, "5"], False),
        ("n", "in", [], False),
        ("n", "nin", [], True),
        ("title", "in", ["HELLO WORLD", 7], True),
        ("title", "nin", ["hello world"], False),
        ("missing", "nin", [1], True),
        ("missing", "in", [None], False),
        ("nothing", "in", [None], True),
        ("meta.author", "in", [{"name": "Grace"}], True),
        # contains
        ("title", "contains", "LO WO", True),
        ("title", "contains", "", True),
        ("title", "contains", "xyz", False),
        ("tags", "contains", "red", True),
        ("tags", "contains", "re", False),  # array elements are compared whole
        ("tags", "contains", 3.0, True),
        ("tags", "contains", None, True),
        ("tags", "contains", {"k": 1}, True),
        ("tags", "contains", [1, 2], True),
        ("tags", "contains", [1], False),
        ("meta", "contains", "author", False),  # objects never match
        ("n", "contains", 5, False),
        ("title", "contains", 5, False),
        # starts_with / ends_with
        ("title", "starts_with", "hello", True),
        ("title", "starts_with", "", True),
        ("title", "starts_with", "World", False),
        ("title", "ends_with", "WORLD", True),
        ("title", "ends_with", "Hello World!", False),
        ("n", "starts_with", "5", False),
        ("tags", "starts_with", "Red", False),
        # regex
        ("title", "regex", "^hello", True),
        ("title", "regex", "world$", True),
        ("title", "regex", "^World", False),
        ("title", "regex", "o\\sW", True),
        ("title", "regex", "[a-z]+ [a-z]+", True),
        ("name", "regex", "(?:ada|bob) l", True),
        ("body", "regex", "caf.!", True),
        ("body", "regex", "\\w{3}\\s-", True),
        ("body", "regex", "\\w{5}\\s-", False),
        ("n", "regex", "5", False),
        # exists / is_null
        ("nothing", "exists", True, True),
        ("missing", "exists", True, False),
        ("missing", "exists", False, True),
        ("meta.author.name", "exists", True, True),
        ("nothing", "is_null", True, True),
        ("nothing", "is_null", False, False),
        ("n", "is_null", False, True),
        ("missing", "is_null", True, False),
        ("missing", "is_null", False, False),
        ("tags.3", "is_null", True, True),
        # text / phrase
        ("body", "text", "dog FOX", True),
        ("body", "text", "fox cat", False),
        ("body", "text", "qui", False),  # whole words only
        ("body", "text", "café", True),
        ("body", "text", "CAFÉ", False),  # only A-Z fold
        ("body", "text", "ünïcode", False),
        ("body", "text", "Ünïcode", True),
        ("body", "phrase", "quick brown fox", True),
        ("body", "phrase", "fox jumps", True),  # separator runs ("--") between words
        ("body", "phrase", "brown quick", False),
        ("body", "phrase", "lazy dog", True),
        ("body", "phrase", "dog lazy", False),
        ("title", "phrase", "hello-world", True),
        ("tags", "text", "red", False),
        ("empty", "text", "x", False),
    ],
)
def test_operator_semantics(field: str, operator: str, value: Any, expected: bool) -> None:
    assert one(field, operator, value) is expected


def test_missing_field_false_for_every_positive_operator() -> None:
    cases = [
        ("eq", 1), ("gt", 0), ("lt", 0), ("gte", 0), ("lte", 0), ("in", [None, 1]),
        ("contains", "a"), ("starts_with", ""), ("ends_with", ""), ("regex", ""),
        ("exists", True), ("is_null", True), ("is_null", False), ("text", "a"),
        ("phrase", "a b"),
    ]
    for operator, value in cases:
        assert one("no.such.field", operator, value) is False, operator
    for operator, value in [("ne", 1), ("nin", [1]), ("exists", False)]:
        assert one("no.such.field", operator, value) is True, operator


def test_decimal_numbers_in_payload() -> None:
    doc = {"x": Decimal("0.1000000000000000000001"), "y": Decimal("2")}
    assert one("x", "gt", 0.1, doc) is True
    assert one("x", "eq", 0.1, doc) is False
    assert one("y", "eq", 2, doc) is True


def test_string_comparisons_use_code_points() -> None:
    doc = {"s": "é"}  # U+00E9 sorts after every ASCII character
    assert one("s", "gt", "z", doc) is True
    assert one("s", "gt", "ê", doc) is False
    assert one("s", "lt", "😀", doc) is True


def test_case_folding_is_ascii_only() -> None:
    doc = {"s": "Straße ÄBC"}
    assert one("s", "eq", "straße äbc", doc) is False
    assert one("s", "eq", "straße ÄBC", doc) is True
    assert one("s", "contains", "STRA", doc) is True
    assert one("s", "regex", "stra", doc) is True
    assert one("s", "regex", "ä", doc) is False


# ------------------------------------------------------------- logic and shorthand


def test_none_and_empty_filters_match_everything() -> None:
    assert ev(None) is True
    assert ev({}) is True
    assert ev({"AND": []}) is True
    assert ev({"NOT": []}) is True
    assert ev({"OR": []}) is False  # no alternative holds


def test_and_or_not() -> None:
    t, f = cond("n", "eq", 5), cond("n", "eq", 6)
    assert ev({"AND": [t, t]}) is True
    assert ev({"AND": [t, f]}) is False
    assert ev({"OR": [f, t]}) is True
    assert ev({"OR": [f, f]}) is False
    # NOT: all its items must be false
    assert ev({"NOT": [f]}) is True
    assert ev({"NOT": [t]}) is False
    assert ev({"NOT": [f, f]}) is True
    assert ev({"NOT": [f, t]}) is False
    # several keys in one object combine with AND
    assert ev({"AND": [t], "OR": [f, t], "NOT": [f]}) is True
    assert ev({"AND": [t], "OR": [f], "NOT": [f]}) is False
    assert ev({"AND": [t], "OR": [t], "NOT": [t]}) is False


def test_nesting() -> None:
    flt = {
        "OR": [
            {"AND": [cond("meta.lang", "eq", "fr"), cond("n", "gt", 1)]},
            {"NOT": [{"OR": [cond("n", "lt", 0), cond("flag", "eq", False)]}]},
        ]
    }
    assert ev(flt) is True
    assert ev({"NOT": [flt]}) is False


def test_shorthand_is_eq_and_combines_with_and() -> None:
    assert ev({"meta.lang": "en"}) is True
    assert ev({"meta.lang": "en", "n": 5}) is True
    assert ev({"meta.lang": "en", "n": 6}) is False
    assert ev({"meta.lang": "en", "AND": [cond("n", "eq", 6)]}) is False
    assert ev({"meta.lang": "en", "case_sensitive": True}) is False
    assert ev({"OR": [{"n": 6}, {"meta.lang": "EN", "case_sensitive": True}]}) is True


def test_case_sensitive_applies_and_is_inherited() -> None:
    c = cond("title", "eq", "hello world")
    assert ev({"AND": [c]}) is True
    assert ev({"AND": [c], "case_sensitive": True}) is False
    # inherited by nested operators ...
    assert ev({"case_sensitive": True, "AND": [{"OR": [c]}]}) is False
    # ... unless they set it themselves (null means inherit)
    assert ev({"case_sensitive": True, "AND": [{"OR": [c], "case_sensitive": False}]}) is True
    assert ev({"case_sensitive": True, "AND": [{"OR": [c], "case_sensitive": None}]}) is False
    assert ev({"case_sensitive": False, "AND": [{"AND": [c], "case_sensitive": True}]}) is False
    for operator, value in [
        ("ne", "hello world"),
        ("in", ["hello world"]),
        ("nin", ["hello world"]),
        ("contains", "hello"),
        ("starts_with", "hello"),
        ("ends_with", "WORLD"),
        ("regex", "^hello"),
    ]:
        insensitive = one("title", operator, value)
        sensitive = one("title", operator, value, case_sensitive=True)
        assert insensitive != sensitive, operator
    # array membership honours it too
    assert one("tags", "contains", "RED") is True
    assert one("tags", "contains", "RED", case_sensitive=True) is False
    # text/phrase are always case-insensitive; ordering always case-sensitive
    assert one("body", "text", "FOX", case_sensitive=True) is True
    assert one("title", "gt", "hello", case_sensitive=False) is False


def test_python_predicate_prepares_once() -> None:
    matches = python_predicate({"OR": [cond("n", "gt", 4), cond("title", "regex", "^x")]})
    assert [matches(d) for d in (DOC, {"n": 1}, {"title": "xyz"}, {})] == [True, False, True, False]
    assert python_predicate(None)({}) is True
    with pytest.raises(FilterError):
        python_predicate({"AND": [cond("n", "gt", [1])]})


def test_accepts_plain_dicts() -> None:
    assert evaluate({"n": 5}, DOC) is True
    with pytest.raises(FilterError, match="not a valid LogicalOperator"):
        evaluate({"AND": "nope"}, DOC)


# ------------------------------------------------------------------- FilterErrors


def err(flt: dict[str, Any]) -> str:
    model = LogicalOperator.model_validate(flt)
    with pytest.raises(FilterError) as info:
        validate_filter(model)
    with pytest.raises(FilterError) as info2:
        evaluate(model, DOC)
    assert str(info.value) == str(info2.value)
    return str(info.value)


def test_filter_error_is_value_error() -> None:
    assert issubclass(FilterError, ValueError)


@pytest.mark.parametrize("operator", ["gt", "lt", "gte", "lte"])
@pytest.mark.parametrize("value", [{"a": 1}, [1], True, None])
def test_ordering_needs_number_or_string(operator: str, value: Any) -> None:
    msg = err({"AND": [cond("n", operator, value)]})
    assert f"operator {operator} needs a number or a string" in msg
    assert "AND[0].value" in msg


@pytest.mark.parametrize("operator", ["in", "nin"])
@pytest.mark.parametrize("value", [1, "a", {"a": 1}, None])
def test_in_needs_list(operator: str, value: Any) -> None:
    msg = err({"OR": [cond("n", operator, value)]})
    assert f"operator {operator} needs a list" in msg
    assert "OR[0].value" in msg


@pytest.mark.parametrize(
    ("operator", "value", "fragment"),
    [
        ("starts_with", 1, "needs a string"),
        ("ends_with", ["a"], "needs a string"),
        ("regex", 1, "needs a pattern string"),
        ("exists", "yes", "needs true or false"),
        ("is_null", 1, "needs true or false"),
        ("text", 5, "needs a string"),
        ("text", "  !! ", "at least one word"),
        ("phrase", "", "at least one word"),
        ("eq", float("nan"), "finite"),
        ("eq", float("inf"), "finite"),
        ("eq", Decimal("1.5"), "not JSON"),
        ("in", [(1, 2)], "not JSON"),
        ("eq", "a\x00b", "NUL"),
        ("in", ["ok", "\ud800"], "surrogate"),
        ("eq", {"a": {"\x00": 1}}, "NUL"),
    ],
)
def test_bad_values(operator: str, value: Any, fragment: str) -> None:
    assert fragment in err({"AND": [cond("x", operator, value)]})


@pytest.mark.parametrize(
    ("field", "fragment"),
    [("", "non-empty"), ("a..b", "empty segment"), (".a", "empty segment"), ("a.", "empty segment"), ("a\x00", "NUL")],
)
def test_bad_fields(field: str, fragment: str) -> None:
    assert fragment in err({"AND": [cond(field, "eq", 1)]})


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("(", "missing ')'"),
        ("a)", "unbalanced ')'"),
        ("[a-", "unterminated '['"),
        ("[z-a]", "out of order"),
        ("*a", "nothing to repeat"),
        ("a**", "stacked or possessive"),
        ("a++", "stacked or possessive"),
        ("a{2}{3}", "stacked or possessive"),
        ("^*", "anchor"),
        ("a{3,2}", "minimum above its maximum"),
        ("a{256}", "255"),
        ("a{,3}", "must start a bound"),
        ("a{x}", "must start a bound"),
        ("a}", "unescaped '}'"),
        ("a]", "unescaped ']'"),
        ("(?=a)", "look-around"),
        ("(?!a)", "look-around"),
        ("(?<=a)b", "look-around"),
        ("(?<!a)b", "look-around"),
        ("(?P<name>a)", "named"),
        ("(?i)abc", "inline flags"),
        ("(a)\\1", "backreferences"),
        ("\\bword\\b", "\\b"),
        ("\\Aabc", "\\A"),
        ("abc\\Z", "\\Z"),
        ("\\x41", "\\x"),
        ("\\u0041", "\\u"),
        ("\\", "lone backslash"),
        ("[[:alpha:]]", "POSIX classes"),
        ("[\\D]", "not allowed inside"),
        ("[a-c-e]", "ambiguous"),
        ("[a-\\d]", "class escape"),
        ("[\\w-z]", "range cannot start"),
        ("[ab-]x[-c]d[b-a]", "out of order"),
        ("((a{255}){255}){255}", "too complex"),
        ("a" * (MAX_REGEX_LENGTH + 1), "limit is"),
    ],
)
def test_bad_regexes(pattern: str, fragment: str) -> None:
    msg = err({"AND": [{"OR": [cond("title", "regex", pattern)]}]})
    assert "AND[0].OR[0].value" in msg
    assert fragment in msg


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("", "anything", True),
        ("a|", "zzz", True),
        ("()", "x", True),
        ("[]a]", "]", True),
        ("[^]a]", "]", False),
        ("[a-]", "-", True),
        ("[-a]", "-", True),
        ("[\\]\\[]", "[", True),
        ("a.c", "a\nc", True),  # '.' matches a newline
        ("c$", "abc\n", False),  # '$' is the end of the string only
        ("^b", "a\nb", False),  # '^' is its start only
        ("\\d+", "x٣", False),  # ASCII digit classes
        ("\\w", "é", False),
        ("\\s", "\u00a0", False),
        ("\\s", "\x0b", True),
        ("\\s", "\x1c", False),  # str.isspace() says yes; C isspace() says no
        ("\\s", "\x85", False),
        ("\\w", "_", True),
        ("k", "\u212a", False),  # no Unicode case folding (Kelvin sign)
        ("s", "\u017f", False),  # (long s)
        ("a{2,3}?b", "aaab", True),
        ("\\.\\*\\+\\?\\(\\)\\{\\}\\|\\^\\$\\\\", ".*+?(){}|^$\\", True),
        ("#%&/ ~", "#%&/ ~", True),
        ("[Z-a]", "z", True),  # case-insensitive ranges fold both ways
        ("[^a]", "A", False),
    ],
)
def test_regex_subset(pattern: str, subject: str, expected: bool) -> None:
    assert one("s", "regex", pattern, {"s": subject}) is expected


def test_depth_limit() -> None:
    flt: dict[str, Any] = {"AND": [cond("n", "eq", 5)]}
    for _ in range(MAX_FILTER_DEPTH - 1):
        flt = {"AND": [flt]}
    assert LogicalOperator.model_validate(flt).depth() == MAX_FILTER_DEPTH
    assert ev(flt) is True
    validate_filter(LogicalOperator.model_validate(flt))
    deeper = {"NOT": [flt]}
    msg = err(deeper)
    assert f"at most {MAX_FILTER_DEPTH}" in msg
    assert "NOT[0]" + ".AND[0]" * (MAX_FILTER_DEPTH - 1) in msg


def test_dynamic_value_rejected() -> None:
    msg = err({"AND": [cond("user", "eq", {"type": "dynamic", "field": "inputs.user_id"})]})
    assert "no runtime inputs to resolve" in msg
    assert "inputs.user_id" in msg
    assert "AND[0].value" in msg
    model = LogicalOperator(
        OR=[FilterCondition(field="a", value=DynamicValue(field="inputs.q"))]
    )
    with pytest.raises(FilterError, match="no runtime inputs to resolve"):
        validate_filter(model)
    # nested inside a list value too
    msg = err({"AND": [cond("user", "in", [1, {"type": "dynamic", "field": "inputs.ids"}])]})
    assert "AND[0].value[1]" in msg
    # shorthand
    assert "no runtime inputs" in err({"x": {"type": "dynamic", "field": "inputs.x"}})


# --------------------------------------------------------------------- SQL hygiene

DOCS = table("docs", column("id", Integer), column("payload", JSONB))
EVIL = "x'; DROP TABLE documents; --"


def compiled(flt: Any) -> tuple[str, dict[str, Any]]:
    stmt = select(DOCS.c.id).where(compile_filter(flt, DOCS.c.payload))
    c = stmt.compile(dialect=postgresql.dialect())
    return str(c), dict(c.params)


def flat_params(params: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for v in params.values():
        out.extend(v if isinstance(v, list) else [v])
    return out


def test_none_compiles_to_true() -> None:
    sql, _ = compiled(None)
    assert sql.rstrip().endswith("WHERE true")


@pytest.mark.parametrize(
    "operator",
    ["eq", "ne", "gt", "lt", "gte", "lte", "contains", "starts_with", "ends_with"],
)
def test_values_and_paths_are_bound(operator: str) -> None:
    flt = {"AND": [cond(f"meta.{EVIL}", operator, EVIL)], "case_sensitive": True}
    sql, params = compiled(flt)
    assert "DROP" not in sql and "meta" not in sql
    values = flat_params(params)
    assert ["meta", EVIL] in params.values()
    assert any(EVIL in str(v) for v in values)


def test_every_operator_binds_its_value() -> None:
    marker = "zq_marker_value"
    values: dict[str, Any] = {
        "eq": marker, "ne": marker, "gt": marker, "lt": marker, "gte": marker,
        "lte": marker, "in": [marker, 1], "nin": [marker], "contains": marker,
        "starts_with": marker, "ends_with": marker, "regex": marker,
        "text": marker, "phrase": marker + " two", "exists": True, "is_null": False,
    }
    for operator, value in values.items():
        for cs in (True, False):
            sql, params = compiled(
                {"AND": [cond(f"{marker}_path.sub", operator, value)], "case_sensitive": cs}
            )
            assert marker not in sql, (operator, sql)
            assert [f"{marker}_path", "sub"] in params.values(), operator
            if operator not in ("exists", "is_null"):
                assert any(marker in str(v) for v in flat_params(params)), operator


def test_json_values_are_bound_as_json_text() -> None:
    sql, params = compiled({"AND": [cond("a", "eq", {"k": [EVIL, 1.5]})]})
    assert "DROP" not in sql
    assert '{"k": ["x\'; DROP TABLE documents; --", 1.5]}' in params.values()


def test_validate_filter_accepts_valid_and_none() -> None:
    validate_filter(None)
    validate_filter(LogicalOperator.model_validate({"a.b": 1, "OR": [cond("c", "regex", "^x")]}))


def test_regex_translation_is_stable() -> None:
    # The pattern sent to PostgreSQL is a re-spelling of the user's pattern.
    _, params = compiled({"AND": [cond("s", "regex", "a[b-]c(?:d|e)*$")]})
    assert "a[b\\-]c(?:d|e)*$" in params.values()
