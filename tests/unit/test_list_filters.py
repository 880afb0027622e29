"""List filters: the document filter grammar (clusterflow.filters) over a list's
columns (compile_column_filter; column_predicate is its Python oracle), with the
gateway's field tables (services/gateway/repository.py)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy.dialects import postgresql

from clusterflow.filters import (
    ColumnFilterError,
    FilterError,
    column_predicate,
    compile_column_filter,
    search_fields,
    search_filter,
)
from services.gateway.repository import (
    CLUSTER_FIELDS,
    CLUSTER_SEARCH,
    EXECUTION_FIELDS,
    EXECUTION_SEARCH,
    TASK_FIELDS,
    task_statuses,
)


def at(day: int) -> datetime:
    return datetime(2026, 11, day, 12, tzinfo=timezone.utc)


CLUSTERS = [
    {"cluster_id": "clust_a", "cluster_name": "Reviews EN", "description": "english product reviews",
     "clustering_method": "kmeans", "embedding_name": "text", "collection_id": ["col_1", "col_2"],
     "created_at": at(1), "updated_at": at(2)},
    {"cluster_id": "clust_b", "cluster_name": "reviews de", "description": None,
     "clustering_method": "hdbscan", "embedding_name": "text", "collection_id": ["col_2"],
     "created_at": at(5), "updated_at": at(5)},
    {"cluster_id": "clust_c", "cluster_name": "Tickets", "description": "support tickets",
     "clustering_method": "auto", "embedding_name": "image", "collection_id": ["col_3"],
     "created_at": at(9), "updated_at": at(10)},
]
EXECUTIONS = [
    {"run_id": "run_1", "task_id": "task_1", "run_name": "baseline", "status": "COMPLETED", "mode": "full",
     "num_clusters": 3, "num_points": 180, "metrics.silhouette_score": 0.71, "created_at": at(1)},
    {"run_id": "run_2", "task_id": "task_2", "run_name": None, "status": "COMPLETED_WITH_ERRORS", "mode": "assign",
     "num_clusters": 3, "num_points": 120, "metrics.silhouette_score": None, "created_at": at(3)},
    {"run_id": "run_3", "task_id": "task_3", "run_name": "Retry", "status": "FAILED", "mode": "full",
     "num_clusters": None, "num_points": 0, "metrics.silhouette_score": None, "created_at": at(7)},
]


def selected(flt, fields, rows, key) -> list[str]:
    keep = column_predicate(flt, fields, "the list")
    return [r[key] for r in rows if keep(r)]


def clusters(flt) -> list[str]:
    return selected(flt, CLUSTER_FIELDS, CLUSTERS, "cluster_id")


def runs(flt) -> list[str]:
    return selected(flt, EXECUTION_FIELDS, EXECUTIONS, "run_id")


def cond(field, operator, value, **extra) -> dict:
    return {"field": field, "operator": operator, "value": value, **extra}


def test_nested_and_or_not():
    assert clusters({"OR": [cond("clustering_method", "eq", "kmeans"), cond("cluster_name", "eq", "tickets")]}) \
        == ["clust_a", "clust_c"]
    assert clusters({"NOT": [cond("clustering_method", "in", ["kmeans", "auto"])]}) == ["clust_b"]
    assert clusters({"AND": [{"OR": [cond("embedding_name", "eq", "text"), cond("cluster_id", "eq", "clust_c")]},
                             {"NOT": [cond("cluster_name", "contains", "EN")]}]}) == ["clust_b", "clust_c"]
    assert clusters({"cluster_name": "Reviews EN"}) == ["clust_a"]  # the shorthand
    assert clusters({}) == ["clust_a", "clust_b", "clust_c"] and clusters(None) == clusters({})


def test_case_sensitive_is_honoured_for_strings():
    assert clusters({"AND": [cond("cluster_name", "starts_with", "reviews")]}) == ["clust_a", "clust_b"]
    assert clusters({"AND": [cond("cluster_name", "starts_with", "reviews", case_sensitive=True)]}) == ["clust_b"]
    assert clusters({"case_sensitive": True, "AND": [cond("cluster_name", "eq", "tickets")]}) == []
    assert clusters({"AND": [cond("cluster_name", "ne", "TICKETS")]}) == ["clust_a", "clust_b"]


def test_ranges_and_datetimes():
    assert clusters({"AND": [cond("created_at", "gte", "2026-11-05T12:00:00Z"),
                             cond("created_at", "lt", "2026-11-09")]}) == ["clust_b"]
    assert clusters({"AND": [cond("updated_at", "gt", "2026-11-05T12:00:00+00:00")]}) == ["clust_c"]
    assert runs({"AND": [cond("num_points", "gt", 100), cond("num_points", "lte", 150)]}) == ["run_2"]
    assert runs({"AND": [cond("metrics.silhouette_score", "gte", 0.5)]}) == ["run_1"]
    assert runs({"AND": [cond("num_clusters", "is_null", True)]}) == ["run_3"]
    assert runs({"AND": [cond("num_points", "nin", [0, 180])]}) == ["run_2"]


def test_array_fields_match_by_element():
    assert clusters({"AND": [cond("collection_id", "eq", "col_2")]}) == ["clust_a", "clust_b"]
    assert clusters({"AND": [cond("collection_id", "in", ["col_1", "col_3"])]}) == ["clust_a", "clust_c"]
    assert clusters({"AND": [cond("collection_id", "ne", "col_2")]}) == ["clust_c"]
    assert clusters({"AND": [cond("collection_id", "nin", ["col_1", "col_3"])]}) == ["clust_b"]
    assert clusters({"AND": [cond("collection_id", "contains", "COL_3")]}) == ["clust_c"]
    assert clusters({"AND": [cond("collection_id", "in", [])]}) == []


def test_an_execution_status_stands_for_the_task_statuses_it_covers():
    assert runs({"AND": [cond("status", "eq", "completed")]}) == ["run_1", "run_2"]
    assert runs({"AND": [cond("status", "eq", "COMPLETED", case_sensitive=True)]}) == ["run_1"]
    assert runs({"AND": [cond("status", "ne", "completed")]}) == ["run_3"]
    assert runs({"AND": [cond("status", "in", ["failed", "pending"])]}) == ["run_3"]
    assert runs({"OR": [cond("mode", "eq", "assign"), cond("run_name", "eq", "retry")]}) == ["run_2", "run_3"]
    assert task_statuses(["completed", "FAILED"]) == ["COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"]


def test_search_is_a_case_insensitive_substring_of_the_text_fields():
    def cluster_search(term):
        return selected(search_filter(term, CLUSTER_SEARCH), search_fields(CLUSTER_FIELDS, CLUSTER_SEARCH),
                        CLUSTERS, "cluster_id")

    def run_search(term):
        return selected(search_filter(term, EXECUTION_SEARCH), search_fields(EXECUTION_FIELDS, EXECUTION_SEARCH),
                        EXECUTIONS, "run_id")

    assert cluster_search("REVIEW") == ["clust_a", "clust_b"]
    assert cluster_search("support") == ["clust_c"]  # the description
    assert cluster_search("%") == []  # no LIKE wildcards
    assert run_search("with_err") == ["run_2"]  # a status, searched by substring though it filters by eq/in only
    assert run_search("run_3") == ["run_3"]
    assert run_search("BASE") == ["run_1"]
    assert search_filter("", CLUSTER_SEARCH) is None and search_filter(None, CLUSTER_SEARCH) is None


@pytest.mark.parametrize(("fields", "flt", "field", "allowed", "message"), [
    (CLUSTER_FIELDS, {"AND": [cond("owner", "eq", "x")]}, "owner", sorted(CLUSTER_FIELDS),
     "AND[0].field: clusters cannot be filtered by 'owner'"),
    (CLUSTER_FIELDS, {"OR": [{"NOT": [cond("collection_id", "gt", "a")]}]}, "collection_id",
     ["eq", "ne", "in", "nin", "contains"], "OR[0].NOT[0].operator: operator gt does not apply to collection_id"),
    (EXECUTION_FIELDS, {"AND": [cond("status", "contains", "comp")]}, "status", ["eq", "ne", "in", "nin"],
     "operator contains does not apply to status"),
    (EXECUTION_FIELDS, {"AND": [cond("num_clusters", "gte", "3")]}, "num_clusters", ["number"],
     "num_clusters takes numbers"),
    (CLUSTER_FIELDS, {"AND": [cond("created_at", "gte", "last week")]}, "created_at", ["ISO 8601 date-time"],
     "created_at takes ISO 8601 date-times"),
    (TASK_FIELDS, {"AND": [cond("task_type", "regex", "engine.*")]}, "task_type", ["eq", "ne", "in", "nin"],
     "operator regex does not apply to task_type"),
    (CLUSTER_FIELDS, {"AND": [cond("cluster_name", "eq", 3)]}, "cluster_name", ["string"],
     "cluster_name takes strings"),
])
def test_a_field_or_operator_the_list_lacks_is_refused_naming_what_it_allows(fields, flt, field, allowed, message):
    what = {id(CLUSTER_FIELDS): "clusters", id(EXECUTION_FIELDS): "executions", id(TASK_FIELDS): "tasks"}[id(fields)]
    for compile_ in (compile_column_filter, column_predicate):
        with pytest.raises(ColumnFilterError) as caught:
            compile_(flt, fields, what)
        assert message in str(caught.value)
        assert caught.value.field == field and caught.value.allowed == allowed


def test_the_document_grammars_own_checks_still_apply():
    with pytest.raises(FilterError, match="needs a list"):
        compile_column_filter({"AND": [cond("cluster_name", "in", "x")]}, CLUSTER_FIELDS)
    with pytest.raises(FilterError, match="nest at most"):
        deep: dict = {"AND": [cond("cluster_name", "eq", "x")]}
        for _ in range(9):
            deep = {"AND": [deep]}
        compile_column_filter(deep, CLUSTER_FIELDS)


def test_the_sql_binds_every_value():
    flt = {"OR": [cond("cluster_name", "eq", "x'; DROP TABLE clusters; --"),
                  cond("collection_id", "nin", ["col_1"]), cond("created_at", "gt", "2026-11-01T00:00:00Z")]}
    sql = compile_column_filter(flt, CLUSTER_FIELDS, "clusters").compile(dialect=postgresql.dialect())
    text = str(sql)
    assert "DROP" not in text and "col_1" not in text
    assert "clusters.cluster_name" in text and "clusters.collection_ids" in text and "EXTRACT(epoch" in text
    assert "x'; drop table clusters; --" in sql.params.values()  # folded: case_sensitive is false
    assert datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp() in [
        float(v) for v in sql.params.values() if isinstance(v, str) and v.replace(".", "").isdigit()]
