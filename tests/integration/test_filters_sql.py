"""compile_filter() on the real PostgreSQL agrees with evaluate() in Python.

A temporary database (test_filters_<random>, created with a non-C default collation
when the server has one, so that any comparison missing an explicit COLLATE "C"
shows) gets a table `docs(id int primary key, payload jsonb)` with several hundred
seeded-random documents: nested objects, mixed-case strings with words, spaces and
non-ASCII text, ints, floats, big numbers, bools, nulls, arrays and missing fields.
Then

* every operator x every path x a pool of values x case_sensitive true/false is run
  as one leaf filter (batched, a boolean column per filter), and
* hypothesis builds random LogicalOperator trees over all 16 operators,

and the ids PostgreSQL selects must equal the ids evaluate() accepts. A filter that
is rejected must be rejected (FilterError) by both paths. An unreachable database
fails the module; nothing is skipped.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import string
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Integer, column, select, table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from clusterflow.filters import (
    FilterError,
    compile_filter,
    evaluate,
    python_predicate,
    validate_filter,
)
from contracts.api import FilterOperator, LogicalOperator

pytestmark = pytest.mark.integration

DEFAULT_URL = "postgresql+asyncpg://clusterflow:clusterflow@127.0.0.1:15432/clusterflow"
SEED = int(os.environ.get("CLUSTERFLOW_FILTER_SEED", "20240611"))
N_DOCS = 500

DOCS = table("docs", column("id", Integer), column("payload", JSONB))

# ------------------------------------------------------------------- value pools

EVIL = "x'; DROP TABLE docs; --"
EVIL2 = 'x"); DELETE FROM docs; --'
WORDS = [
    "hello", "Hello", "WORLD", "world", "foo", "bar", "Baz", "new", "York", "the",
    "quick", "brown", "fox", "42", "3d", "a", "B", "café", "CAFÉ", "naïve", "straße",
    "ünï", "日本", "σας", "ΣΑΣ", "İi", "ǅ", "x1y2",
]
SEPS = [" ", " ", " ", "  ", "-", ", ", "\n", "\t", "_", ".", "—", "\u00a0", "/", "'", "é", "", "·"]
STRINGS = [
    "", "a", "A", "b", "abc", "ABC", "aBc", "Hello World", "hello world", "hello",
    "HELLO", "world", "10", "1", "1.0", "5", "true", "null", "[1]", EVIL, EVIL2, "%",
    "_", "\\", "'", '"', "a.b", "  lead", "trail  ", "\n", "tab\there", "é", "É",
    "e\u0301", "ß", "SS", "İ", "i\u0307", "ǅ", "😀", "z", "Z", "~", "{}", "a\nb",
    "xxxxxxxxxxxxxxxxxxxx", "[a-z]", "$", "^", "foo bar", "Foo-Bar", "café", "Café",
    "new york", "New-York city", "ab", "aab", "ba", "b-a", "\u00a0", "日本語",
    "ſ", "\u212a", "k", "K", "ı", "I", "i", "a\x1cb", "\x85", "_x_", "a\rb", "\x0b",
]
NUMBERS: list[Any] = [
    0, 1, -1, 2, 3, 5, 10, 100, 1.0, -0.0, 0.5, 1.5, 2.5, -2.5, 0.1, 0.2,
    0.30000000000000004, 1e-7, 1e16, 1e23, 10**23, 2**53, 2**53 + 1, float(2**53),
    123456789012345678901234567890, -(10**30), 3.141592653589793, 1e300,
]
SCALARS: list[Any] = [*STRINGS, *NUMBERS, True, False, None]
PATHS = [
    "s", "n", "x", "b", "arr", "arr.0", "arr.1", "arr.-1", "arr.-2", "arr.01",
    "arr. 1", "arr.+0", "arr.-0", "arr.x", "arr.0.s", "obj", "obj.s", "obj.n",
    "obj.arr", "obj.arr.0", "obj.obj.s", "txt", "nul", "missing", "missing.deeper",
    EVIL, 'we"ird', "sp ace", "ünï", "0", "0.0", "s.0", "x.0", "x.a", "x.a.b",
]


def rnd_string(r: random.Random) -> str:
    roll = r.random()
    if roll < 0.5:
        return r.choice(STRINGS)
    if roll < 0.8:
        return rnd_text(r)
    alphabet = string.ascii_letters + string.digits + " -_.,'\"\\\n\téÉßİıσΣ😀日\u00a0—[](){}*+?^$|"
    return "".join(r.choice(alphabet) for _ in range(r.randint(0, 12)))


def rnd_text(r: random.Random) -> str:
    out = []
    for i in range(r.randint(0, 6)):
        if i or r.random() < 0.2:
            out.append(r.choice(SEPS))
        w = r.choice(WORDS)
        out.append(w.upper() if r.random() < 0.15 else w)
    if r.random() < 0.2:
        out.append(r.choice(SEPS))
    return "".join(out)


def rnd_number(r: random.Random) -> Any:
    roll = r.random()
    if roll < 0.6:
        return r.choice(NUMBERS)
    if roll < 0.8:
        return r.randint(-20, 20)
    return round(r.uniform(-20, 20), r.randint(0, 3))


def rnd_scalar(r: random.Random) -> Any:
    roll = r.random()
    if roll < 0.4:
        return rnd_string(r)
    if roll < 0.8:
        return rnd_number(r)
    return r.choice([True, False, None])


def rnd_json(r: random.Random, depth: int = 0) -> Any:
    roll = r.random()
    if depth >= 3 or roll < 0.6:
        return rnd_scalar(r)
    if roll < 0.8:
        return [rnd_json(r, depth + 1) for _ in range(r.randint(0, 4))]
    keys = ["a", "b", "s", "n", "0"]
    return {k: rnd_json(r, depth + 1) for k in r.sample(keys, r.randint(0, 3))}


def rnd_array(r: random.Random) -> list[Any]:
    return [
        r.choice([rnd_scalar, rnd_scalar, rnd_json, lambda r: {"s": rnd_string(r)}])(r)
        for _ in range(r.randint(0, 5))
    ]


def rnd_obj(r: random.Random, depth: int = 0) -> dict[str, Any]:
    gens = {
        "s": rnd_string,
        "n": rnd_number,
        "arr": rnd_array,
        "obj": (lambda r: rnd_obj(r, depth + 1)) if depth < 2 else rnd_json,
    }
    return {k: g(r) for k, g in gens.items() if r.random() < 0.6}


def make_doc(r: random.Random) -> dict[str, Any]:
    gens = {
        "s": rnd_string,
        "n": lambda r: rnd_number(r) if r.random() < 0.85 else rnd_scalar(r),
        "x": rnd_json,
        "b": lambda r: r.choice([True, False, None, 0, 1, "true"]),
        "arr": rnd_array,
        "obj": rnd_obj,
        "txt": rnd_text,
        "nul": lambda r: None,
        EVIL: rnd_scalar,
        'we"ird': rnd_scalar,
        "sp ace": rnd_string,
        "ünï": rnd_number,
        "0": rnd_json,
    }
    return {k: g(r) for k, g in gens.items() if r.random() < 0.75}


def make_docs() -> dict[int, dict[str, Any]]:
    r = random.Random(SEED)
    docs = {i: make_doc(r) for i in range(1, N_DOCS + 1)}
    docs[N_DOCS + 1] = {}
    docs[N_DOCS + 2] = {"s": EVIL, EVIL: EVIL, "arr": [EVIL], "txt": EVIL}
    return docs


DOC_DATA = make_docs()


# ------------------------------------------------------------------ the database


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Db:
    def __init__(self, loop: asyncio.AbstractEventLoop, conn: AsyncConnection, docs: dict[int, dict[str, Any]], collation: str):
        self.loop = loop
        self.conn = conn
        self.docs = docs
        self.collation = collation

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def ids(self, flt: LogicalOperator) -> set[int]:
        stmt = select(DOCS.c.id).where(compile_filter(flt, DOCS.c.payload))

        async def go() -> set[int]:
            return {row[0] for row in await self.conn.execute(stmt)}

        return self.run(go())

    def matrix(self, filters: list[LogicalOperator]) -> dict[int, tuple[bool, ...]]:
        cols = [compile_filter(f, DOCS.c.payload).label(f"f{i}") for i, f in enumerate(filters)]
        stmt = select(DOCS.c.id, *cols)

        async def go() -> dict[int, tuple[bool, ...]]:
            return {row[0]: tuple(row[1:]) for row in await self.conn.execute(stmt)}

        return self.run(go())


async def _connect_admin(dsn: str, wait_s: float) -> asyncpg.Connection:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return await asyncpg.connect(dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(2)


async def _create_database(admin: asyncpg.Connection, name: str) -> str:
    """Create `name` with a non-C default collation when possible; return which."""
    attempts = [
        ("icu en-US", f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                      "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"),
        ("libc en_US.UTF-8", f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                             "LOCALE 'en_US.UTF-8'"),
        ("server default", f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"),
    ]
    for label, sql in attempts:
        try:
            await admin.execute(sql)
            return label
        except asyncpg.PostgresError as exc:
            last = exc
    raise last


@pytest.fixture(scope="module")
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    url = os.environ.get("CLUSTERFLOW_DATABASE_URL", DEFAULT_URL)
    loop = asyncio.new_event_loop()
    name = f"test_filters_{secrets.token_hex(6)}"
    try:
        admin = loop.run_until_complete(_connect_admin(_asyncpg_dsn(url), 30))
    except Exception as first:  # not up: start it with the project's script, once
        try:
            env = request.getfixturevalue("server_env")
            url = env.get("CLUSTERFLOW_DATABASE_URL", url)
            admin = loop.run_until_complete(_connect_admin(_asyncpg_dsn(url), 60))
        except Exception as exc:
            loop.close()
            pytest.fail(
                f"PostgreSQL at {make_url(url).render_as_string()} is unreachable "
                f"({first!r}; after servers.sh start: {exc!r}). Start it with "
                "`bash deploy/local/servers.sh start postgres` or set "
                "CLUSTERFLOW_DATABASE_URL.",
                pytrace=False,
            )
    try:
        collation = loop.run_until_complete(_create_database(admin, name))
    finally:
        loop.run_until_complete(admin.close())
    engine = create_async_engine(make_url(url).set(database=name), poolclass=NullPool)
    docs = DOC_DATA

    async def setup() -> AsyncConnection:
        conn = await engine.connect()
        await conn.exec_driver_sql("CREATE TABLE docs (id int PRIMARY KEY, payload jsonb)")
        raw = await conn.get_raw_connection()
        await raw.driver_connection.executemany(
            "INSERT INTO docs (id, payload) VALUES ($1, $2::text::jsonb)",
            [(i, json.dumps(p)) for i, p in docs.items()],
        )
        await conn.commit()
        return conn

    try:
        conn = loop.run_until_complete(setup())
        yield Db(loop, conn, docs, collation)
        # Nothing injected through a path or value: the table is intact.
        count = loop.run_until_complete(conn.exec_driver_sql("SELECT count(*) FROM docs")).scalar()
        assert count == len(docs)
        loop.run_until_complete(conn.close())
    finally:
        loop.run_until_complete(engine.dispose())

        async def drop() -> None:
            admin = await _connect_admin(_asyncpg_dsn(url), 30)
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                await admin.close()

        loop.run_until_complete(drop())
        loop.close()


def expected_ids(db: Db, flt: LogicalOperator) -> set[int]:
    matches = python_predicate(flt)
    return {i for i, p in db.docs.items() if matches(p)}


def test_database_setup(db: Db) -> None:
    """The documents are stored as JSON equal to the Python ones."""

    async def go() -> int:
        rows = await db.conn.exec_driver_sql("SELECT id, payload::text FROM docs")
        return sum(1 for i, text in rows if json.loads(text) is not None and i in db.docs)

    assert db.run(go()) == len(db.docs)
    print(f"\ntest database default collation: {db.collation}; seed {SEED}")


# ------------------------------------------------ every operator x path x values

OPERATOR_VALUES: dict[str, list[Any]] = {
    "eq": [*SCALARS[::2], [1, 2], [], {"a": 1}, {}, "HELLO WORLD", 1.0, 5.0, 10**23, 1e23],
    "ne": ["hello world", 5, None, True, 1.0, [], {"s": "a"}, "a"],
    "gt": ["", "a", "B", "hello", "é", "z", "~", 0, 1, 2.5, -1, 1e16, 10**23, 1e23, 0.1, 2**53],
    "lt": ["b", "Hello", "😀", 5, 0.30000000000000004, -0.0, 1e300],
    "gte": ["A", "hello world", 1, 1.0, 2**53 + 1, float(2**53)],
    "lte": ["a", "\n", 10, 1e-7, 0.2],
    "in": [[], ["a", "HELLO", 5], [None, True], [1.0, "1"], [[1, 2], {"a": 1}], STRINGS[:20], [1e23]],
    "nin": [[], ["hello world", None], [5, 1, 0]],
    "contains": ["", "a", "O W", "hello", "\\", "%", "_", 5, 1.0, None, True, {"s": "a"}, [], "é", EVIL],
    "starts_with": ["", "a", "HEL", "hello w", "x'", "é", " "],
    "ends_with": ["", "c", "WORLD", "d", "  ", "\n"],
    "regex": [
        "", "a", "^a", "a$", "^$", "hello|world", "^h.*d$", "[a-c]+", "[^a-z]", "\\d", "\\s",
        "\\w+\\s\\w+", "\\W", "b{2,}", "(?:ab)+", "é|É", "^.$", "[A-Z]", "\\.", "x'", "\\\\",
        "[\\-z]", "[Z-a]", "a.b", "^(a|b)*$", "\\n", "[é-ü]", ".{5,}", "^\\S+$",
    ],
    "exists": [True, False],
    "is_null": [True, False],
    "text": ["hello", "world HELLO", "foo bar", "café", "CAFÉ", "new york", "ünï", "日本", "3d", "σας", "x1y2", "İi", "42"],
    "phrase": ["hello world", "new york", "world hello", "quick brown fox", "foo", "a b", "naïve café"],
}


def leaf_filters() -> list[LogicalOperator]:
    out = []
    for operator, values in OPERATOR_VALUES.items():
        for path in PATHS:
            for value in values:
                for cs in (False, True):
                    out.append(LogicalOperator.model_validate(
                        {"AND": [{"field": path, "operator": operator, "value": value}], "case_sensitive": cs}
                    ))
    return out


def test_every_leaf_agrees(db: Db) -> None:
    filters = leaf_filters()
    chunk = 300
    mismatches = []
    nontrivial = 0
    for start in range(0, len(filters), chunk):
        batch = filters[start : start + chunk]
        got = db.matrix(batch)
        for j, flt in enumerate(batch):
            got_ids = {i for i, row in got.items() if row[j]}
            want = expected_ids(db, flt)
            nontrivial += 0 < len(want) < len(db.docs)
            if got_ids != want:
                mismatches.append((flt.model_dump(exclude_none=True), sorted(got_ids ^ want)[:5]))
    assert not mismatches, f"{len(mismatches)} of {len(filters)} disagree; first: {mismatches[:5]}"
    assert nontrivial > len(filters) // 4, nontrivial
    print(f"\n{len(filters)} leaf filters agree ({nontrivial} select some but not all documents)")


# ------------------------------------------------- regex complexity vs PostgreSQL


def big_regex(r: random.Random, depth: int = 0) -> str:
    roll = r.random()
    if depth > 3 or roll < 0.3:
        return r.choice(["a", "\\w", "[a-z]", ".", "[^b]", "ab", "\\S"])
    if roll < 0.5:
        return "(" + "|".join(big_regex(r, depth + 1) for _ in range(r.randint(2, 4))) + ")"
    if roll < 0.7:
        return "".join(big_regex(r, depth + 1) for _ in range(r.randint(1, 3)))
    quant = r.choice([
        "?", "*", "+", f"{{{r.randint(1, 255)}}}", f"{{{r.randint(0, 255)},}}",
        f"{{0,{r.randint(1, 255)}}}", f"{{{r.randint(0, 255)},255}}",
    ])
    return "(" + big_regex(r, depth + 1) + ")" + quant


def test_accepted_regexes_compile_in_postgres(db: Db) -> None:
    """The complexity limit keeps every accepted pattern below PostgreSQL's
    "regular expression is too complex" (a 500): big accepted patterns run."""
    r = random.Random(SEED)
    accepted, rejected = [], 0
    while len(accepted) < 150:
        pattern = big_regex(r)
        if len(pattern) < 12:
            continue
        flt = LogicalOperator.model_validate(
            {"AND": [{"field": "s", "operator": "regex", "value": pattern}], "case_sensitive": len(accepted) % 2 == 0}
        )
        try:
            validate_filter(flt)
        except FilterError as exc:
            assert "too complex" in str(exc), exc
            rejected += 1
            continue
        accepted.append(flt)
    # Only PostgreSQL runs them: Python's backtracking `re` can take exponential time
    # on such patterns (agreement on smaller patterns is the property tests' job).
    for start in range(0, len(accepted), 50):
        db.matrix(accepted[start : start + 50])  # raises if PostgreSQL refuses one
    assert rejected > 0  # the generator does reach the limit


# ------------------------------------------------------------- random filter trees

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "s"]), inner, max_size=2),
    max_leaves=4,
)

REGEX_ATOMS = [
    "a", "b", "A", "B", "z", "é", "É", " ", "-", "1", "\\.", ".", "\\d", "\\w", "\\s", "\\W",
    "\\S", "\\D", "[a-c]", "[^a]", "[A-Z]", "[é-ü]", "[\\-z]", "[Z-a]", "[]a]", "[a-]", "\\n",
    "\\\\", "x'", "[\\d\\s]", "[^\\w]",
]


@st.composite
def regexes(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 9)) if depth < 3 else 0
    if kind <= 3:
        return draw(st.sampled_from(REGEX_ATOMS))
    if kind <= 5:
        return "".join(draw(st.lists(regexes(depth + 1), min_size=1, max_size=3)))
    if kind == 6:
        return "(" + "|".join(draw(st.lists(regexes(depth + 1), min_size=1, max_size=3))) + ")"
    if kind == 7:
        return draw(st.sampled_from(["^", ""])) + draw(regexes(depth + 1)) + draw(st.sampled_from(["$", ""]))
    quant = draw(st.sampled_from(["*", "+", "?", "{2}", "{1,}", "{0,2}", "*?", "+?", "{1,3}?"]))
    return "(?:" + draw(regexes(depth + 1)) + ")" + quant


# raw strings from a metacharacter-heavy alphabet: mostly rejected, and when not, the
# two engines must agree
raw_patterns = st.text(alphabet="ab()[]{}*+?|^$.\\-:=!<Pdwbz1,0 é", max_size=8)

text_values = st.lists(st.sampled_from(WORDS), min_size=0, max_size=3).flatmap(
    lambda ws: st.lists(st.sampled_from(SEPS), min_size=len(ws) + 1, max_size=len(ws) + 1).map(
        lambda seps: seps[0] + "".join(w + s for w, s in zip(ws, seps[1:]))
    )
)

scalars = st.sampled_from(SCALARS)


CORE_PATHS = ["s", "n", "x", "b", "arr", "arr.0", "arr.-1", "obj.s", "obj.n", "obj.arr", "txt", "nul", "sp ace"]
paths = st.sampled_from(CORE_PATHS) | st.sampled_from(PATHS)


def _walk(value: Any, path: str) -> Any:
    for segment in path.split("."):
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.lstrip("-").isdigit() and -len(value) <= int(segment) < len(value):
            value = value[int(segment)]
        else:
            return None
    return value


def doc_value(path: str, pick: Any) -> Any:
    """A value some document has at `path` (so that filters select something)."""
    return _walk(DOC_DATA[pick], path)


def values_for(operator: str, path: str) -> st.SearchStrategy[Any]:
    any_value = json_values | scalars
    from_doc = st.integers(1, N_DOCS).map(lambda i: doc_value(path, i))
    if operator in ("eq", "ne", "contains", "gt", "lt", "gte", "lte", "starts_with", "ends_with"):
        any_value = any_value | from_doc
    elif operator in ("in", "nin"):
        any_value = any_value | st.lists(from_doc, min_size=1, max_size=3)
    elif operator in ("text", "phrase"):
        any_value = any_value | from_doc.filter(lambda v: isinstance(v, str))
    if operator in ("gt", "lt", "gte", "lte"):
        good = st.sampled_from(STRINGS) | st.sampled_from(NUMBERS) | st.integers(-20, 20) | st.floats(-1e20, 1e20)
    elif operator in ("in", "nin"):
        good = st.lists(scalars | json_values, max_size=4)
    elif operator in ("contains", "eq", "ne"):
        good = scalars | st.lists(scalars, max_size=2)
    elif operator in ("starts_with", "ends_with"):
        good = st.sampled_from(STRINGS) | st.text(max_size=3)
    elif operator == "regex":
        good = regexes() | raw_patterns
    elif operator in ("exists", "is_null"):
        good = st.booleans()
    else:  # text, phrase
        good = text_values
    return st.one_of(good, good, good, any_value)


OPERATORS = list(OPERATOR_VALUES)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(st.sampled_from(OPERATORS))
    path = draw(paths)
    return {"field": path, "operator": operator, "value": draw(values_for(operator, path))}


def logical(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    # mostly non-empty lists: `OR: []` (nothing) and `AND: []` (everything) make
    # the whole tree trivial
    items = st.lists(children, min_size=1, max_size=3) | st.lists(children, max_size=0)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        node: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(["AND", "OR", "NOT"]), unique=True, min_size=1, max_size=2)):
            node[key] = draw(items)
        cs = draw(st.sampled_from(["absent", "absent", True, False, None]))
        if cs != "absent":
            node["case_sensitive"] = cs
        if draw(st.integers(0, 5)) == 0:  # shorthand equality keys
            path = draw(paths)
            node[path] = draw(scalars | st.integers(1, N_DOCS).map(lambda i: doc_value(path, i)))
        return node

    return build()


filter_trees = st.recursive(
    conditions(), lambda children: logical(children), max_leaves=8
).map(lambda node: node if "field" not in node else {"AND": [node]})

STATS = {"examples": 0, "invalid": 0, "nontrivial": 0}


@settings(
    max_examples=int(os.environ.get("CLUSTERFLOW_FILTER_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(raw=filter_trees)
def test_random_filters_agree(db: Db, raw: dict[str, Any]) -> None:
    STATS["examples"] += 1
    flt = LogicalOperator.model_validate(raw)
    note(f"filter: {flt.model_dump(exclude_none=True)!r}")
    try:
        compile_filter(flt, DOCS.c.payload)
    except FilterError:
        STATS["invalid"] += 1
        with pytest.raises(FilterError):
            evaluate(flt, {})
        with pytest.raises(FilterError):
            validate_filter(flt)
        return
    want = expected_ids(db, flt)
    STATS["nontrivial"] += 0 < len(want) < len(db.docs)
    got = db.ids(flt)
    assert got == want, f"only SQL: {sorted(got - want)[:10]}, only Python: {sorted(want - got)[:10]}"


def test_random_filters_were_meaningful() -> None:
    """Guard against a vacuous property: enough valid, selective filters ran."""
    print(f"\nhypothesis: {STATS}")
    if STATS["examples"] == 0:  # test_random_filters_agree was deselected
        return
    assert STATS["examples"] >= 100, STATS
    assert STATS["nontrivial"] >= STATS["examples"] // 10, STATS


# ------------------------------------------------------------------- column filters

def test_column_filters_on_postgres_agree_with_python(db: Db) -> None:
    """compile_column_filter over typed columns (text, int, timestamptz, text[], a
    key of a JSONB column) selects what column_predicate accepts, for every operator a
    kind takes, both case settings, nested logic and the alias expansion."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import DateTime, Float, String
    from sqlalchemy.dialects.postgresql import ARRAY

    from clusterflow.filters import ColumnField, column_predicate, compile_column_filter

    rows_table = table("list_rows", column("id", Integer), column("name", String), column("n", Integer),
                       column("at", DateTime(timezone=True)), column("tags", ARRAY(String)),
                       column("metrics", JSONB), column("score", Float))
    fields = {
        "name": ColumnField(rows_table.c.name),
        "status": ColumnField(rows_table.c.name, ops=(FilterOperator.eq, FilterOperator.ne, FilterOperator.in_,
                                                      FilterOperator.nin), aliases={"done": ("Alpha", "beta")}),
        "n": ColumnField(rows_table.c.n, "number"),
        "score": ColumnField(rows_table.c.score, "number"),
        "at": ColumnField(rows_table.c.at, "datetime"),
        "tag": ColumnField(rows_table.c.tags, "array"),
        "metrics.s": ColumnField(rows_table.c.metrics["s"], "number", jsonb=True),
    }
    rng = random.Random(SEED)
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    names = ["Alpha", "alpha", "beta", "Beta Gamma", "x'; DROP TABLE docs; --", "100%", "", None]
    rows = []
    for i in range(120):
        rows.append({"id": i, "name": rng.choice(names), "n": rng.choice([None, 0, 1, 5, 10, -3]),
                     "score": rng.choice([None, 0.5, 0.25, 1.0, -2.0]),
                     "at": rng.choice([None, base + timedelta(hours=rng.randrange(0, 500), microseconds=rng.randrange(10**6))]),
                     "tags": rng.choice([[], ["a"], ["a", "B"], ["b", "c"], ["C"]]),
                     "metrics.s": rng.choice([None, 0.1, 0.7, 3])})

    async def setup() -> None:
        await db.conn.exec_driver_sql(
            "CREATE TABLE list_rows (id int PRIMARY KEY, name text, n int, at timestamptz, tags text[], "
            "metrics jsonb, score float8)")
        raw = await db.conn.get_raw_connection()
        await raw.driver_connection.executemany(
            "INSERT INTO list_rows VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7)",
            [(r["id"], r["name"], r["n"], r["at"], r["tags"],
              json.dumps({} if r["metrics.s"] is None else {"s": r["metrics.s"]}), r["score"]) for r in rows])
        await db.conn.commit()

    db.run(setup())
    by_field = [{**r, "tag": r["tags"], "status": r["name"]} for r in rows]
    t = (base + timedelta(hours=200)).isoformat()

    def c(field, op, value, cs=None):
        return {"field": field, "operator": op, "value": value, **({} if cs is None else {"case_sensitive": cs})}

    filters = []
    for cs in (False, True):
        filters += [
            {"AND": [c("name", op, v, cs)]} for op, v in [
                ("eq", "alpha"), ("ne", "alpha"), ("in", ["ALPHA", "beta"]), ("nin", ["alpha", "100%"]),
                ("gt", "Beta"), ("lte", "alpha"), ("contains", "A"), ("contains", "%"), ("starts_with", "be"),
                ("ends_with", "GAMMA"), ("regex", "^a.p"), ("text", "gamma"), ("phrase", "beta gamma"),
                ("is_null", True), ("is_null", False), ("eq", "")]]
        filters += [{"AND": [c("tag", op, v, cs)]} for op, v in [
            ("eq", "b"), ("ne", "a"), ("in", ["c", "A"]), ("nin", ["b"]), ("contains", "B"), ("in", [])]]
        filters += [{"AND": [c("status", op, v, cs)]} for op, v in [
            ("eq", "done"), ("ne", "done"), ("in", ["done", "100%"]), ("nin", ["done"])]]
    filters += [{"AND": [c("n", op, v)]} for op, v in [
        ("eq", 5), ("ne", 5), ("in", [0, 10]), ("nin", [1]), ("gt", 0), ("gte", 1), ("lt", 5), ("lte", -3),
        ("is_null", True)]]
    filters += [{"AND": [c("score", "gt", 0.3)]}, {"AND": [c("score", "eq", 0.25)]},
                {"AND": [c("metrics.s", "gte", 0.7)]}, {"AND": [c("metrics.s", "is_null", True)]},
                {"AND": [c("at", "gt", t)]}, {"AND": [c("at", "lte", t)]}, {"AND": [c("at", "is_null", True)]},
                {"AND": [c("at", "in", [t, base.isoformat()])]}, {"AND": [c("at", "gte", "2026-11-05")]},
                {"OR": [c("name", "eq", "alpha"), {"NOT": [c("n", "gt", 0)]}], "AND": [c("tag", "ne", "c")]},
                {"NOT": [{"OR": [c("status", "eq", "done"), c("at", "lt", t)]}]}]

    cols = [compile_column_filter(f, fields).label(f"f{i}") for i, f in enumerate(filters)]

    async def go() -> dict[int, tuple]:
        result = await db.conn.execute(select(rows_table.c.id, *cols).select_from(rows_table))
        return {row[0]: tuple(row[1:]) for row in result}

    got = db.run(go())
    for i, flt in enumerate(filters):
        keep = column_predicate(flt, fields)
        expected = {r["id"] for r in by_field if keep(r)}
        selected = {rid for rid, values in got.items() if values[i]}
        assert selected == expected, (flt, sorted(selected ^ expected)[:10])
    assert any(len({rid for rid, v in got.items() if v[i]}) not in (0, len(rows)) for i in range(len(filters)))
