"""Every PostgreSQL panel of the Grafana dashboards (deploy/grafana/dashboards/*.json)
runs against the real, migrated schema: a migration that renames or drops a column a
panel reads fails here, not silently in Grafana.

Grafana's SQL macros are expanded the way its PostgreSQL datasource does
(`$__timeFilter(col)`, `$__timeGroup(col, '5m')`, `$__timeGroupAlias(...)`,
`$__timeFrom()`, `$__timeTo()`, `$__unixEpochFilter(col)`); a macro this expander does
not know fails the test, so a new one gets a translation here first.
"""
from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from clusterflow.db import make_engine

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
PG_TYPES = {"postgres", "grafana-postgresql-datasource"}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"'?(\d+)([smhd])'?", interval.strip())
    assert m, f"unsupported interval {interval!r}"
    return int(m.group(1)) * UNITS[m.group(2)]


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    frm, to = f"'{start.isoformat()}'::timestamptz", f"'{end.isoformat()}'::timestamptz"

    def group(col: str, interval: str) -> str:
        s = _seconds(interval)
        return f"to_timestamp(floor(extract(epoch FROM {col}) / {s}) * {s})"

    def call(name: str, args: list[str]) -> str:
        if name == "timeFilter":
            return f"{args[0]} BETWEEN {frm} AND {to}"
        if name == "timeGroup":
            return group(args[0], args[1])
        if name == "timeGroupAlias":
            return group(args[0], args[1]) + ' AS "time"'
        if name == "timeFrom":
            return frm
        if name == "timeTo":
            return to
        if name == "unixEpochFilter":
            return f"{args[0]} BETWEEN {int(start.timestamp())} AND {int(end.timestamp())}"
        raise AssertionError(f"no translation for the Grafana macro $__{name}")

    out, pos = [], 0
    for m in re.finditer(r"\$__(\w+)\(", sql):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while depth:  # the closing parenthesis, nested ones skipped
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        inner = sql[m.end():i - 1]
        args = [a.strip() for a in re.split(r",(?![^()]*\))", inner)] if inner.strip() else []
        out.append(sql[pos:m.start()] + call(m.group(1), args))
        pos = i
    expanded = "".join(out) + sql[pos:]
    leftover = re.search(r"\$__\w+|\$\{?\w+", expanded)
    assert leftover is None, f"unexpanded variable {leftover.group(0)} in {sql!r}"
    return expanded


def postgres_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = list(dashboard.get("panels", []))
        while panels:
            panel = panels.pop()
            panels.extend(panel.get("panels", []))  # rows
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("type") in PG_TYPES and target.get("rawSql"):
                    found.append((f"{path.name}: {panel['title']} [{target['refId']}]", target["rawSql"]))
    return found


QUERIES = postgres_queries()


def test_the_dashboards_have_postgres_panels() -> None:
    assert len(QUERIES) >= 5


def test_macro_expansion() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    sql = expand_macros("SELECT $__timeGroupAlias(created_at, '5m'), x FROM t WHERE $__timeFilter(t.created_at)",
                        start, start + timedelta(hours=1))
    assert 'floor(extract(epoch FROM created_at) / 300) * 300) AS "time"' in sql
    assert "t.created_at BETWEEN '2026-01-01T00:00:00+00:00'::timestamptz AND" in sql


async def _seed_and_run(database_url: str) -> dict[str, list]:
    now = datetime.now(timezone.utc)
    engine = make_engine(database_url)
    results = {}
    try:
        async with engine.begin() as conn:
            for i, (status, mode) in enumerate([("COMPLETED", "full"), ("FAILED", "full"),
                                                ("PENDING", "full"), ("COMPLETED", "assign")]):
                task_id, run_id = f"task_dash_{i}", f"run_dash_{i}"
                started = now - timedelta(minutes=30 - i)
                done = started + timedelta(seconds=20 + 10 * i) if status != "PENDING" else None
                await conn.execute(text(
                    "INSERT INTO tasks (task_id, namespace, task_type, status, run_id, cluster_id, error, created_at)"
                    " VALUES (:t, 'dash', 'engine_cluster_build', :s, :r, 'clust_dash', :e, :c)"
                    " ON CONFLICT (task_id) DO NOTHING"),
                    dict(t=task_id, s=status, r=run_id, c=started, e="boom" if status == "FAILED" else None))
                await conn.execute(text(
                    "INSERT INTO executions (run_id, task_id, namespace, cluster_id, status, mode, clustering_method,"
                    " error_message, stage, created_at, started_at, completed_at, updated_at)"
                    " VALUES (:r, :t, 'dash', 'clust_dash', :s, :m, 'kmeans', :e, 'clustering', :c, :c, :d,"
                    " :u) ON CONFLICT (run_id) DO NOTHING"),
                    dict(r=run_id, t=task_id, s=status, m=mode, c=started, d=done, u=done or started,
                         e="clusterer failed: boom" if status == "FAILED" else None))
                await conn.execute(text(
                    "INSERT INTO run_events (event_id, run_id, status, service, stage, occurred_at)"
                    " VALUES (:id, :r, :s, 'status', 'x', :c) ON CONFLICT (event_id) DO NOTHING"),
                    dict(id=f"ev_dash_{i}", r=run_id, s=status, c=started))
        async with engine.connect() as conn:
            for name, raw in QUERIES:
                sql = expand_macros(raw, now - timedelta(hours=6), now + timedelta(minutes=1))
                try:
                    results[name] = (await conn.execute(text(sql))).all()
                except Exception as exc:  # noqa: BLE001 - the panel is named in the failure
                    pytest.fail(f"panel {name} fails on the migrated schema: {exc}\n{sql}", pytrace=False)
    finally:
        await engine.dispose()
    return results


def test_every_postgres_panel_runs_on_the_migrated_schema(settings) -> None:
    results = asyncio.run(_seed_and_run(settings.database_url))
    assert set(results) == {name for name, _ in QUERIES}
    empty = [name for name, rows in results.items() if not rows]
    assert not empty, f"panels without rows over the seeded data: {empty}"
    failures = next(rows for name, rows in results.items() if "Recent failures" in name)
    assert any("boom" in (row.error_message or "") for row in failures)
