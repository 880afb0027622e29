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

The package: `grammar` (JSON values and paths, the checks, the prepared tree),
`regex` (the portable regex subset), `evaluator` (Python, one payload at a time: the
test oracle), `sql` (PostgreSQL over a JSONB payload) and `columns` (the same grammar
over typed columns, for the list routes); `errors` holds FilterError.
"""
from __future__ import annotations

from clusterflow.filters.columns import (
    ColumnField,
    ColumnFilterError,
    column_predicate,
    compile_column_filter,
    search_fields,
    search_filter,
)
from clusterflow.filters.errors import FilterError
from clusterflow.filters.evaluator import evaluate, python_predicate
from clusterflow.filters.regex import MAX_REGEX_LENGTH
from clusterflow.filters.sql import compile_filter, validate_filter

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
