"""The `clusterflow` CLI against a fake API (httpx.MockTransport): no servers."""
from __future__ import annotations

import json

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from clusterflow import client
from clusterflow.client import cli
from tests.fakes.client import DIM, FakeApi


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(client.time, "sleep", lambda s: None)


def run(fake: FakeApi, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli.app, ["--namespace", "ns", *args], obj={"transport": httpx.MockTransport(fake)},
                              env=env)


def vectors(n: int) -> list[list[float]]:
    return [[i + 0.5, -i * 1.0, 0.25] for i in range(n)]


# --- ingest -----------------------------------------------------------------------------

def _expected_batches(fake: FakeApi, n: int, batch: int) -> None:
    sizes = [len(u["documents"]) for u in fake.upserts]
    assert sizes == [batch] * (n // batch) + ([n % batch] if n % batch else [])
    docs = [d for u in fake.upserts for d in u["documents"]]
    assert [d["document_id"] for d in docs] == [f"doc-{i}" for i in range(n)]
    assert docs[3]["embeddings"] == {"text": [3.5, -3.0, 0.25]}
    assert docs[3]["payload"] == {"title": "title 3", "year": 2003, "score": 0.75}
    upserts = [r for r in fake.requests if r.url.path.endswith("/documents")]
    assert all(r.url.path == "/v1/collections/col_1/documents" for r in upserts)
    assert all(r.headers["X-Namespace"] == "ns" for r in fake.requests)


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"document_id": [f"doc-{i}" for i in range(n)], "title": [f"title {i}" for i in range(n)],
                         "year": [2000 + i for i in range(n)], "score": [0.75] * n,
                         "embedding": vectors(n)})


def test_ingest_parquet_uploads_the_file_to_the_bulk_import(fake, tmp_path):
    path = tmp_path / "docs.parquet"
    _frame(23).with_columns(pl.col("embedding").cast(pl.Array(pl.Float32, DIM))).write_parquet(path)
    result = run(fake, "ingest", "docs", str(path))
    assert result.exit_code == 0, result.output
    assert fake.upserts == [] and len(fake.imports) == 1
    request = fake.imports[0]
    assert request.url.path == "/v1/collections/col_1/documents/import"
    assert request.headers["content-type"] == "application/vnd.apache.parquet"
    assert request.read() == path.read_bytes()  # the file itself, not re-encoded
    assert dict(request.url.params.multi_items()) == {"id_column": "document_id", "embedding_column": "text=embedding"}
    assert "imported 22 of 23 documents into col_1" in result.stdout
    assert "row 7: doc-7: vector holds NaN" in result.stdout


def test_ingest_csv_with_json_encoded_vectors(fake, tmp_path):
    path = tmp_path / "docs.csv"
    frame = _frame(12)
    frame.with_columns(pl.Series("embedding", [json.dumps(v) for v in vectors(12)])).write_csv(path)
    result = run(fake, "ingest", "col_1", str(path), "--batch-size", "5")
    assert result.exit_code == 0, result.output
    _expected_batches(fake, 12, 5)


def test_ingest_jsonl_with_other_column_names(fake, tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": f"doc-{i}", "vec": v, "title": f"title {i}", "year": 2000 + i, "score": 0.75}
            for i, v in enumerate(vectors(7))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    result = run(fake, "ingest", "docs", str(path), "--id-column", "id", "--embedding-column", "vec",
                 "--batch-size", "3")
    assert result.exit_code == 0, result.output
    _expected_batches(fake, 7, 3)


def test_ingest_missing_column_is_a_usage_error(fake, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"document_id": "a", "vector": [1, 2, 3]}) + "\n")
    result = run(fake, "ingest", "docs", str(path))
    assert result.exit_code == 2
    assert "no column 'embedding'" in result.output
    assert fake.upserts == []


def test_ingest_unknown_extension_is_a_usage_error(fake, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("x")
    result = run(fake, "ingest", "docs", str(path))
    assert result.exit_code == 2 and "--format" in result.output


def test_ingest_422_names_the_batch_in_one_line(fake, tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"document_id": f"d{i}", "embedding": [1.0, 2.0, 3.0] if i < 4 else [1.0, 2.0]} for i in range(6)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    result = run(fake, "ingest", "docs", str(path), "--batch-size", "4")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: batch 2 (rows 5-6; 4 documents were stored before it): HTTP 422")
    assert "body.documents.0.embeddings.text: dimension mismatch" in lines[0]
    assert len(fake.upserts) == 1


def test_ingest_bad_vector_names_the_row(fake, tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('document_id,embedding\na,"[1,2,3]"\nb,not-a-list\n')
    result = run(fake, "ingest", "docs", str(path))
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: docs.csv: row 2: embedding is not a JSON list of numbers "
                                     "(0 documents were stored before it)")


# --- errors -----------------------------------------------------------------------------

def test_api_404_is_one_line_and_exit_1(fake):
    result = run(fake, "execute", "clust_nope")
    assert result.exit_code == 1
    assert result.stderr == "error: HTTP 404: Cluster not found\n"
    assert result.stdout == ""


def test_409_on_create(fake):
    result = run(fake, "collections", "create", "taken", "--embedding", "text=3")
    assert result.exit_code == 1
    assert result.stderr == "error: HTTP 409: A collection named 'taken' already exists\n"


def test_unreachable_server_is_one_line():
    def refuse(request):
        raise httpx.ConnectError("Connection refused", request=request)

    result = CliRunner().invoke(cli.app, ["--url", "http://127.0.0.1:9", "task", "t"],
                                obj={"transport": httpx.MockTransport(refuse)})
    assert result.exit_code == 1
    assert result.stderr == "error: cannot reach http://127.0.0.1:9: Connection refused\n"


def test_many_422_details_are_summarised():
    exc = client.ApiError(422, {"detail": [{"loc": ["body", "x", i], "msg": "bad", "type": "t"} for i in range(9)]})
    text = cli.describe(exc)
    assert text == "HTTP 422: invalid request: body.x.0: bad; body.x.1: bad; body.x.2: bad (and 6 more)"


def test_bad_embedding_option_is_a_usage_error(fake):
    result = run(fake, "collections", "create", "docs2", "--embedding", "text")
    assert result.exit_code == 2 and "NAME=VALUE" in result.output


# --- commands ---------------------------------------------------------------------------

def test_collections_create_and_list(fake):
    result = run(fake, "collections", "create", "docs2", "--embedding", "text=384", "-e", "image=512", "--json")
    assert result.exit_code == 0, result.output
    sent = json.loads(fake.requests[-1].content)
    assert sent == {"collection_name": "docs2", "embeddings": {"text": 384, "image": 512}}
    assert json.loads(result.stdout)["collection_id"] == "col_2"
    result = run(fake, "collections", "list")
    assert result.exit_code == 0 and "col_1" in result.stdout and "text=3" in result.stdout


def test_clusters_create_parses_params_as_json(fake):
    result = run(fake, "clusters", "create", "--collection", "docs", "--name", "topics", "--method", "hdbscan",
                 "--param", "min_cluster_size=50", "--param", "metric=euclidean", "--param", "eps=0.5",
                 "--param", 'weights=[1, 2]', "--param", "flag=true", "--sample-size", "100")
    assert result.exit_code == 0, result.output
    sent = json.loads(fake.requests[-1].content)
    assert sent["algorithm_params"] == {"min_cluster_size": 50, "metric": "euclidean", "eps": 0.5,
                                        "weights": [1, 2], "flag": True}
    assert sent["collection_ids"] == ["col_1"] and sent["clustering_method"] == "hdbscan"
    assert sent["sample_size"] == 100 and sent["vis_n_components"] == 2 and sent["layout_stability"] == "align"
    assert "created cluster clust_1" in result.stdout


def test_the_hierarchy_options_reach_the_cluster_and_the_run(fake):
    result = run(fake, "clusters", "create", "-c", "col_1", "-n", "t", "--hierarchical", "--max-hierarchy-depth", "4")
    assert result.exit_code == 0, result.output
    sent = json.loads(fake.requests[-1].content)
    assert sent["hierarchical"] is True and sent["max_hierarchy_depth"] == 4
    result = run(fake, "execute", "clust_1", "--no-hierarchical", "--max-hierarchy-depth", "2")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {"hierarchical": False, "max_hierarchy_depth": 2}


def test_execute_without_wait_prints_the_task(fake):
    result = run(fake, "execute", "clust_1", "--sample-size", "10", "--vis-n-components", "3",
                 "--defer-visualization", "--layout-stability", "transform")
    assert result.exit_code == 0, result.output
    assert json.loads(fake.requests[-1].content) == {"sample_size": 10, "vis_n_components": 3,
                                                     "defer_visualization": True, "layout_stability": "transform"}
    assert "task_1" in result.stdout and "run_1" in result.stdout
    assert fake.polls == 0


def test_execute_wait_polls_until_terminal(fake):
    result = run(fake, "execute", "clust_1", "--wait")
    assert result.exit_code == 0, result.output
    assert fake.polls == len(fake.task_states)
    assert "run run_1 completed: 3 clusters" in result.stdout
    assert "/v1/clusters/clust_1/executions/run_1/view?namespace=ns" in result.stdout


def test_view_link_carries_the_key_in_its_fragment_only(fake):
    result = run(fake, "--api-key", "cfk_1_s/cr+t", "execute", "clust_1", "--wait")
    assert result.exit_code == 0, result.output
    link = next(line.split(None, 1)[1] for line in result.stdout.splitlines() if line.startswith("view:"))
    url = httpx.URL(link)
    assert url.path == "/v1/clusters/clust_1/executions/run_1/view"
    assert dict(url.params) == {"namespace": "ns"}  # no key in the query string
    assert link.endswith("#key=cfk_1_s%2Fcr%2Bt")  # quoted: the page's URLSearchParams reads "+" as " "
    assert all("cfk_1" not in str(r.url) for r in fake.requests)
    assert "cfk_1" not in result.stderr


def test_clusters_create_without_method_leaves_it_to_the_server(fake):
    result = run(fake, "clusters", "create", "--collection", "docs", "--name", "topics")
    assert result.exit_code == 0, result.output
    sent = json.loads(fake.requests[-1].content)
    assert "clustering_method" not in sent and sent["algorithm_params"] == {}


def test_execute_wait_exits_1_when_the_run_fails(fake):
    fake.task_states = [("IN_PROGRESS", "clustering", 0.3), ("FAILED", "failed", 0.3)]
    fake.task_error = "n_clusters=5000 exceeds the 25 documents"
    result = run(fake, "execute", "clust_1", "--wait")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == \
        "error: run run_1 ended FAILED: n_clusters=5000 exceeds the 25 documents"
    assert fake.polls == 2


def test_results_table(fake):
    result = run(fake, "results", "clust_1")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "silhouette 0.457" in text and "Medieval history" in text and "king, castle, siege" in text
    assert text.index("cl_0") < text.index("cl_1") < text.index("cl_-1 (noise)")
    assert fake.requests[-1].url.path == "/v1/clusters/clust_1/executions"
    run(fake, "results", "clust_1", "run_1")
    assert fake.requests[-1].url.path == "/v1/clusters/clust_1/executions/run_1"


def test_results_of_a_run_with_a_hierarchy_print_a_tree(fake):
    fake.centroids = [
        {"cluster_id": "cl_0", "num_members": 9, "label": "Castles", "keywords": ["castle", "siege"],
         "parent_cluster_id": "cl_3", "hierarchy_level": 1, "child_cluster_ids": []},
        {"cluster_id": "cl_1", "num_members": 6, "label": "Kings", "keywords": ["king", "crown"],
         "parent_cluster_id": "cl_3", "hierarchy_level": 1, "child_cluster_ids": []},
        {"cluster_id": "cl_2", "num_members": 5, "label": "Space probes", "keywords": ["orbit"],
         "parent_cluster_id": None, "hierarchy_level": 0, "child_cluster_ids": []},
        {"cluster_id": "cl_3", "num_members": 15, "label": "Medieval history", "keywords": ["medieval"],
         "parent_cluster_id": None, "hierarchy_level": 0, "child_cluster_ids": ["cl_0", "cl_1"]},
        {"cluster_id": "cl_-1", "num_members": 5, "keywords": []}]
    result = run(fake, "results", "clust_1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("2 topics over 3 clusters" in line for line in lines)
    row = {name: next(i for i, line in enumerate(lines) if name in line)
           for name in ("Medieval history", "Castles", "Kings", "Space probes", "noise cl_-1")}
    indent = {name: len(lines[i]) - len(lines[i].lstrip(" │├└─")) for name, i in row.items()}
    # the topic, then its subtopics beneath it and further in; the other top-level cluster, noise last
    assert row["Medieval history"] < row["Castles"] < row["Kings"] < row["Space probes"] < row["noise cl_-1"]
    assert indent["Castles"] == indent["Kings"] > indent["Medieval history"] == indent["Space probes"]
    assert "15 (60.0%)" in lines[row["Medieval history"]] and "castle, siege" in lines[row["Castles"]]


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_export_pages_through_data(fake, tmp_path, suffix):
    out = tmp_path / f"members.{suffix}"
    result = run(fake, "export", "clust_1", "run_1", str(out), "--page-size", "10")
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(out) if suffix == "parquet" else pl.read_csv(out)
    assert frame.columns == ["document_id", "cluster_id", "distance_to_centroid", "x", "y", "z"]
    assert frame.height == 25 and frame["document_id"].to_list() == [f"d{i}" for i in range(25)]
    offsets = [json.loads(r.content)["offset"] for r in fake.requests if r.url.path.endswith("/data")]
    assert offsets == [0, 10, 20]
    assert not list(tmp_path.glob(".*partial"))


def test_export_refuses_other_formats(fake, tmp_path):
    result = run(fake, "export", "clust_1", "run_1", str(tmp_path / "out.xlsx"))
    assert result.exit_code == 2


def test_task_and_env_options(fake):
    result = CliRunner().invoke(cli.app, ["task", "task_1"], obj={"transport": httpx.MockTransport(fake)},
                                env={"CLUSTERFLOW_NAMESPACE": "from-env", "CLUSTERFLOW_API_KEY": "sekret",
                                     "CLUSTERFLOW_URL": "http://gateway.example:8000"})
    assert result.exit_code == 0, result.output
    request = fake.requests[-1]
    assert request.headers["X-Namespace"] == "from-env"
    assert request.headers["Authorization"] == "Bearer sekret"
    assert str(request.url) == "http://gateway.example:8000/v1/tasks/task_1"
    assert "PENDING" in result.stdout and "run_1" in result.stdout


def test_jsonable_payload_values():
    from datetime import date, datetime
    from decimal import Decimal

    assert cli.jsonable({"d": date(2024, 1, 2), "t": datetime(2024, 1, 2, 3, 4), "n": float("nan"),
                         "x": Decimal("1.5"), "l": [1, None]}) == \
        {"d": "2024-01-02", "t": "2024-01-02T03:04:00", "n": None, "x": 1.5, "l": [1, None]}


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for command in ("collections", "ingest", "clusters", "execute", "results", "export", "task"):
        assert command in result.stdout


def test_an_unknown_layout_stability_is_refused_before_any_request(fake):
    sent = len(fake.requests)
    result = run(fake, "execute", "clust_1", "--layout-stability", "sideways")
    assert result.exit_code == 2 and len(fake.requests) == sent
    assert "align" in result.output and "transform" in result.output
