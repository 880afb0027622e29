"""Document filters: `LogicalOperator` trees compiled to SQL over a JSONB payload.

A filter (contracts.api.LogicalOperator) selects documents by their JSON `payload`.
This module gives it one meaning, implemented twice:

* `compile_filter(flt, payload)` -- a SQLAlchemy boolean expression over a JSONB
  column expression (PostgreSQL); every user value and every path segment is a bound
  parameter, never SQL text.
* `evaluate(flt, payload_dict)` -- the same predicate in plain Python (the test
  oracle; also usable on documents already in memory); `python_predicate(flt)`
  prepares it once for many documents.
* `validate_filter(flt)` -- compile against a dummy column, for request-time checks.

Invalid filters raise `FilterError` (a ValueError; the API answers 400) from all
three, with the location in the filter ("AND[0].OR[2]") and what to change.

Logic
-----
* A LogicalOperator holds its lists together with AND: every `AND` item holds, at
  least one `OR` item holds, and no `NOT` item holds ("all conditions must be
  false": NOT [a, b] = (not a) and (not b)). An absent (or null) list adds nothing.
* Empty lists: `AND: []` matches everything, `OR: []` matches nothing, `NOT: []`
  matches everything; `{}` matches everything. `None` as the whole filter matches
  everything.
* Shorthand keys (`{"metadata.title": "x"}`) are `eq` conditions under AND (the
  model rewrites them while validating).
* Nesting deeper than contracts.api.MAX_FILTER_DEPTH (LogicalOperator.depth()) is a
  FilterError.
* `case_sensitive` (default false) is inherited by nested operators and conditions
  unless they set it themselves (true or false; null means "inherit"). The hosted
  SDK sends `case_sensitive: false` on every operator and condition.
* Every condition is two-valued: a missing field makes a condition false, never SQL
  NULL, so `ne`/`nin`/NOT are exact complements of `eq`/`in`/the plain condition.

Fields (paths)
--------------
`field` is a dotted path into the payload: "metadata.title" -> payload["metadata"]
["title"]. Segments are split on "." (so a key that contains a dot cannot be
addressed); the field must be non-empty, with no empty segment and no NUL character.
A segment reads an object key when the value reached so far is an object, and an
array element when it is an array -- exactly as PostgreSQL's `#>` does: the segment
must then be an integer in C `strtol` syntax (optional leading whitespace, optional
sign, decimal digits, fitting a 32-bit int), and a negative index counts from the
end ("tags.0" is the first tag, "tags.-1" the last). Anything else (a scalar on the
way, a missing key, an index out of range or not an integer) makes the field
*missing*. A present JSON `null` is not missing.

Values
------
Filter values are JSON: null, booleans, numbers, strings, lists, objects. Numbers
must be finite; strings must not contain NUL (PostgreSQL text cannot) or lone
surrogates. A DynamicValue -- or any object {"type": "dynamic", ...} anywhere inside
a value -- is a FilterError: a clustering execution has no runtime inputs to resolve
it from.

Numbers compare by exact decimal value, as jsonb's `numeric` does: 1 == 1.0 ==
1e0, and a float means the decimal text Python prints for it (repr), so 1e23 equals
the integer 10**23. Booleans are not numbers (true != 1). Strings compare by code
point (PostgreSQL `COLLATE "C"`, whatever the database's locale).

Case-insensitive matching (`case_sensitive: false`, the default) folds the ASCII
letters A-Z to a-z and nothing else (PostgreSQL `lower(x COLLATE "C")`, regex `~*`
under COLLATE "C"): "ABC" matches "abc", but "É" does not match "é". This keeps the
semantics identical in Python and in any database locale. It applies to top-level
string comparisons only: strings nested inside an object or array value compared
with eq/in/contains are compared exactly.

Operators (field value = the value at `field`; "string field" = the field is a JSON
string, and so on; a field of any other type, or missing, does not match unless said)
----------------------------------------------------------------------------------
eq           field present and equal to the value (JSON equality: same type, numbers
             by decimal value, arrays element-wise in order, objects key-wise); a
             string value against a string field honours case_sensitive. `eq null`
             matches a present JSON null only.
ne           not eq. True for a missing field (as in MongoDB) and for another type.
gt lt gte lte
             value must be a number or a string (else FilterError "operator gt needs
             a number or a string"). Number value: number field, numeric order.
             String value: string field, code point order (always case-sensitive).
in           value must be a list (else FilterError); eq against any element. `in []`
             matches nothing.
nin          not in (true for a missing field; `nin []` matches everything).
contains     string value + string field: substring (case_sensitive honoured; ""
             is in every string). Array field: some element is eq the value (any
             JSON value; case_sensitive honoured for string elements vs a string
             value). Objects and other scalars never match.
starts_with, ends_with
             value must be a string; string field with that prefix / suffix
             (case_sensitive honoured).
regex        value must be a string holding a pattern in the portable subset below;
             string field in which the pattern matches somewhere (search, not full
             match). Case-insensitive unless case_sensitive (ASCII folding, `~*`).
exists       value must be a boolean: true = field present (null included), false =
             field missing.
is_null      value must be a boolean: true = field present and JSON null; false =
             field present and not null (a missing field matches neither).
text         value must be a string with at least one word; string field containing
             every word of the value as a whole word, in any order (ASCII
             case-insensitive, always).
phrase       like text, but the words must appear consecutively, in order.

Words (text, phrase): a string is split into words at *separator* characters: ASCII
characters other than letters and digits (whitespace, punctuation, control),
U+0080-U+00BF (C1 controls, Latin-1 punctuation, no-break space), U+00D7, U+00F7,
U+2000-U+206F (general punctuation and spaces) and U+3000-U+303F (CJK punctuation).
Every other character -- ASCII letters and digits, and all other non-ASCII
characters (so "café" and "日本語" are single words) -- is a word character.
Phrase words are separated by any run of separators ("new-york" is the phrase "new
york").

Regex subset
------------
PostgreSQL ("ARE") and Python regexes differ, so a pattern must stay inside a subset
that means the same in both, and anything else is a FilterError (not a database
error). Allowed:
  literals (any character but the metacharacters \\ ^ $ . | ? * + ( ) [ ] { }),
  `\\` + ASCII punctuation for a literal metacharacter, `.` (any character, newline
  included), `^` / `$` (start / end of the whole string only), `\\d \\D \\s \\S \\w
  \\W` (ASCII classes: [0-9], [ \\t\\n\\r\\f\\v], [A-Za-z0-9_]), `\\n \\t \\r \\f \\v`,
  groups `( )` and `(?: )`, alternation `|`, quantifiers `* + ? {m} {m,} {m,n}`
  (m <= n <= 255) each optionally lazy (`?`), bracket expressions `[...]` / `[^...]`
  with literals, ranges `a-z` (by code point, low <= high), escapes and `\\d \\s \\w`
  (a literal `-` goes first or last; a literal `[` must be written `\\[`).
Rejected: look-around and every other `(?...)` form (named groups, inline flags,
comments), backreferences, `\\b \\B \\A \\Z \\x \\u` and every other letter escape,
POSIX classes (`[:alpha:]`), `\\D \\S \\W` inside brackets, stacked or possessive
quantifiers, `{,n}`, a bare `{` or `}` or `]`, patterns over 1000 characters or whose
expansion (bounded repeats multiply) is too large for PostgreSQL.
"""
from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Union

from pydantic import ValidationError
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

from contracts.api import (
    MAX_FILTER_DEPTH,
    DynamicValue,
    FilterCondition,
    FilterOperator,
    LogicalOperator,
)

__all__ = [
    "MAX_REGEX_LENGTH",
    "ColumnField",
    "ColumnFilterError",
    "FilterError",
    "column_predicate",
    "compile_column_filter",
    "compile_filter",
    "evaluate",
    "python_predicate",
    "search_fields",
    "search_filter",
    "validate_filter",
]

MAX_REGEX_LENGTH = 1000
# Limit on a rough estimate of the NFA a pattern expands to (bounded repeats copy
# their operand). PostgreSQL 15 refuses patterns ("regular expression is too
# complex") from an estimate of about 35,000, and matching slows with size (up to
# ~1 ms per row near 7,000, tens of microseconds below 2,000), so keep it small:
# `\w{1,255}` is about 1,500.
_MAX_REGEX_SIZE = 2_000


class FilterError(ValueError):
    """An invalid filter. The message says where (e.g. "AND[0].OR[1]") and what to
    change; the API returns it as a 400."""


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


# ------------------------------------------------------------------ regex subset

_REGEX_META = frozenset("\\^$.|?*+()[]{}")
_PUNCT = frozenset(string.punctuation)
_CLASS_ESCAPES = frozenset("dDsSwW")
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_CHAR_ESCAPE_OUT = {v: "\\" + k for k, v in _CHAR_ESCAPES.items()}


def _re_char(c: str) -> str:
    """A literal character, spelled the same for Python and PostgreSQL."""
    if c in _PUNCT:
        return "\\" + c
    return _CHAR_ESCAPE_OUT.get(c, c)


class _RegexParser:
    """Parses the portable regex subset; emits equivalent Python and PostgreSQL
    patterns (and a size estimate), or raises FilterError."""

    def __init__(self, pattern: str, where: str) -> None:
        self.p = pattern
        self.i = 0
        self.where = where

    def fail(self, msg: str) -> FilterError:
        return FilterError(
            f"{self.where}: regex {self.p!r} is not supported at position {self.i}: "
            f"{msg}. Only the portable subset (literals, . ^ $ | ( ) (?: ) [ ] "
            "* + ? {m,n}, \\d \\s \\w and their negations, \\n \\t \\r \\f \\v, and \\ "
            "before punctuation) is accepted"
        )

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.p[j] if j < len(self.p) else None

    def parse(self) -> tuple[str, str, int]:
        py, pg, size = self.alternation()
        if self.i < len(self.p):  # stopped at an unmatched ')'
            raise self.fail("unbalanced ')' (write \\) for a literal parenthesis)")
        return py, pg, size

    def alternation(self) -> tuple[str, str, int]:
        parts = [self.branch()]
        while self.peek() == "|":
            self.i += 1
            parts.append(self.branch())
        return (
            "|".join(p[0] for p in parts),
            "|".join(p[1] for p in parts),
            sum(p[2] for p in parts) + 2 * len(parts),
        )

    def branch(self) -> tuple[str, str, int]:
        py, pg, size = [], [], 0
        while self.peek() is not None and self.peek() not in "|)":
            a, b, n = self.piece()
            py.append(a)
            pg.append(b)
            size += n
        return "".join(py), "".join(pg), size

    def piece(self) -> tuple[str, str, int]:
        py, pg, size, quantifiable = self.atom()
        c = self.peek()
        if c is None or c not in "*+?{":
            return py, pg, size
        if not quantifiable:
            raise self.fail("a quantifier must follow something repeatable, not an anchor")
        start = self.i
        if c == "{":
            lo, hi, text = self.bound()
            # PostgreSQL copies the operand once per repeat (plus an optional
            # tail), and optional copies cost about twice as much.
            times = 2 * (hi if hi is not None else lo + 1) - lo
        else:
            self.i += 1
            text = c
            times = 2
        if self.peek() == "?":  # lazy: the same set of matches for a boolean search
            self.i += 1
            text += "?"
        nxt = self.peek()
        if nxt is not None and nxt in "*+?{":
            self.i = start
            raise self.fail(
                "stacked or possessive quantifiers are not supported; wrap the "
                "repeated part in ( ) first"
            )
        return py + text, pg + text, (size + 2) * max(times, 1)

    def bound(self) -> tuple[int, int | None, str]:
        m = re.compile(r"\{([0-9]+)(,([0-9]*))?\}").match(self.p, self.i)
        if m is None:
            raise self.fail(
                "'{' must start a bound {m}, {m,} or {m,n}; write \\{ for a literal brace"
            )
        lo = int(m.group(1))
        hi: int | None = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        if lo > 255 or (hi is not None and hi > 255):
            raise self.fail("repetition bounds may not exceed 255")
        if hi is not None and lo > hi:
            raise self.fail(f"bound {{{lo},{hi}}} has its minimum above its maximum")
        self.i = m.end()
        if m.group(2) is None:
            text = f"{{{lo}}}"
        elif hi is None:
            text = f"{{{lo},}}"
        else:
            text = f"{{{lo},{hi}}}"
        return lo, hi, text

    def atom(self) -> tuple[str, str, int, bool]:
        c = self.p[self.i]
        if c == "(":
            self.i += 1
            if self.peek() == "?":
                if self.peek(1) != ":":
                    raise self.fail(
                        "(?...) constructs other than (?: ) -- look-around, named "
                        "groups, inline flags, comments -- are not supported"
                    )
                self.i += 2
            py, pg, size = self.alternation()
            if self.peek() != ")":
                raise self.fail("missing ')' (write \\( for a literal parenthesis)")
            self.i += 1
            return f"(?:{py})", f"(?:{pg})", size + 2, True
        if c == "[":
            py, pg = self.bracket()
            return py, pg, 1, True
        if c == ".":
            self.i += 1
            return ".", ".", 1, True
        if c == "^":
            self.i += 1
            return r"\A", "^", 1, False
        if c == "$":
            self.i += 1
            return r"\Z", "$", 1, False
        if c == "\\":
            return (*self.escape(in_bracket=False), 1, True)  # type: ignore[return-value]
        if c in "*+?{":
            raise self.fail(f"nothing to repeat before {c!r} (write \\{c} for a literal {c})")
        if c in "]}":
            raise self.fail(f"unescaped {c!r}; write \\{c} for a literal {c}")
        self.i += 1
        out = _re_char(c)
        return out, out, 1, True

    def escape(self, in_bracket: bool) -> tuple[str, str]:
        d = self.peek(1)
        if d is None:
            raise self.fail("the pattern ends with a lone backslash")
        if d in _CLASS_ESCAPES:
            if in_bracket and d in "DSW":
                raise self.fail(f"\\{d} is not allowed inside [ ]; use [^...] instead")
            self.i += 2
            return "\\" + d, "\\" + d
        if d in _CHAR_ESCAPES or d in _PUNCT:
            self.i += 2
            out = "\\" + d
            return out, out
        raise self.fail(
            f"escape \\{d} is not supported (backreferences, \\b, \\A, \\Z, \\x, \\u and "
            "other letter escapes mean different things in Python and PostgreSQL)"
        )

    def bracket_char(self) -> str | None:
        """One literal character inside brackets (unescaped), or None for a class
        escape (\\d \\s \\w); advances."""
        c = self.p[self.i]
        if c == "\\":
            d = self.peek(1)
            if d is not None and d in _CLASS_ESCAPES:
                self.escape(in_bracket=True)
                return None
            self.escape(in_bracket=True)
            return _CHAR_ESCAPES.get(d, d)  # type: ignore[arg-type]
        if c == "[":
            raise self.fail(
                "a '[' inside brackets must be written \\[ (POSIX classes such as "
                "[:alpha:] are not supported; use \\d \\s \\w or ranges)"
            )
        self.i += 1
        return c

    def bracket(self) -> tuple[str, str]:
        self.i += 1  # '['
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        items: list[str] = []
        first = True
        while True:
            c = self.peek()
            if c is None or (c == "-" and self.peek(1) is None):
                raise self.fail("unterminated '[' (write \\[ for a literal bracket)")
            if c == "]" and not first:
                self.i += 1
                break
            if c == "-":
                if first or self.peek(1) == "]":
                    self.i += 1
                    items.append(_re_char("-"))
                    first = False
                    continue
                raise self.fail(
                    "a literal '-' inside [ ] must come first or last (or be written \\-)"
                )
            if c == "\\" and self.peek(1) is not None and self.peek(1) in _CLASS_ESCAPES:
                d = self.p[self.i + 1]
                self.escape(in_bracket=True)
                items.append("\\" + d)
                if self.peek() == "-" and self.peek(1) not in (None, "]"):
                    raise self.fail(f"a range cannot start at \\{d}")
                first = False
                continue
            lo = self.bracket_char()
            assert lo is not None
            first = False
            if self.peek() == "-" and self.peek(1) not in (None, "]"):
                self.i += 1
                hc = self.peek()
                if hc == "\\" and self.peek(1) is not None and self.peek(1) in _CLASS_ESCAPES:
                    raise self.fail("a range cannot end at a class escape")
                if hc == "]":
                    raise self.fail("a range needs an end character")
                hi = self.bracket_char()
                assert hi is not None
                if ord(lo) > ord(hi):
                    raise self.fail(f"range {lo!r}-{hi!r} is out of order (low > high)")
                if self.peek() == "-" and self.peek(1) not in (None, "]"):
                    raise self.fail("a '-' right after a range is ambiguous; write \\-")
                items.append(f"{_re_char(lo)}-{_re_char(hi)}")
            else:
                items.append(_re_char(lo))
        out = "[" + ("^" if negate else "") + "".join(items) + "]"
        return out, out


@dataclass(frozen=True)
class _Regex:
    python: re.Pattern[str]
    postgres: str
    case_sensitive: bool


def _compile_regex(pattern: str, case_sensitive: bool, where: str) -> _Regex:
    if len(pattern) > MAX_REGEX_LENGTH:
        raise FilterError(
            f"{where}: regex is {len(pattern)} characters long; the limit is "
            f"{MAX_REGEX_LENGTH}"
        )
    py, pg, size = _RegexParser(pattern, where).parse()
    if size > _MAX_REGEX_SIZE:
        raise FilterError(
            f"{where}: regex {pattern!r} is too complex (nested bounded repeats "
            "expand it too far); use fewer or smaller {m,n} repeats"
        )
    flags = re.ASCII | re.DOTALL | (0 if case_sensitive else re.IGNORECASE)
    try:
        compiled = re.compile(py, flags)
    except re.error as exc:  # should not happen inside the subset
        raise FilterError(f"{where}: regex {pattern!r} does not compile: {exc}") from None
    return _Regex(compiled, pg, case_sensitive)


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
