"""The regex subset a filter may use (see the package docstring): parsed, bounded,
and translated so Python's `re` and PostgreSQL's ARE agree on every match."""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from clusterflow.filters.errors import FilterError




MAX_REGEX_LENGTH = 1000
# Limit on a rough estimate of the NFA a pattern expands to (bounded repeats copy
# their operand). PostgreSQL 15 refuses patterns ("regular expression is too
# complex") from an estimate of about 35,000, and matching slows with size (up to
# ~1 ms per row near 7,000, tens of microseconds below 2,000), so keep it small:
# `\w{1,255}` is about 1,500.
_MAX_REGEX_SIZE = 2_000


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
