"""`clusterflow`: the command line over the REST API (`clusterflow.client.Client`).

    clusterflow collections create docs --embedding text=384
    clusterflow ingest docs documents.parquet            # parquet, CSV or JSONL
    clusterflow clusters create --collection docs --name topics --param n_clusters=8
    clusterflow execute topics --wait
    clusterflow results topics                          # the latest run
    clusterflow export topics RUN_ID members.parquet
    clusterflow task TASK_ID
    clusterflow up [--detach]                           # the whole local system; `down` stops it

Global options (before the command): `--url` (CLUSTERFLOW_URL, default
http://127.0.0.1:8000), `--api-key` (CLUSTERFLOW_API_KEY), `--namespace`
(CLUSTERFLOW_NAMESPACE; the gateway's `X-Namespace`, "default" when absent).
Collections and clusters can be named by id or by name.

Exit codes: 0 success; 1 the API answered an error, the server could not be reached,
a run ended FAILED/CANCELED or a wait timed out (one line on stderr says which);
2 usage errors (bad options, a missing column, an unknown file type).
Commands that print an object take `--json` to print the API's JSON instead.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from clusterflow.client import COMPLETED, TERMINAL, ApiError, Client
from contracts.api import LayoutStability

app = typer.Typer(name="clusterflow", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
collections_app = typer.Typer(help="Create and list collections.", no_args_is_help=True)
clusters_app = typer.Typer(help="Create and list cluster definitions.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")
app.add_typer(clusters_app, name="clusters")

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_PAGE = 10_000  # the gateway's limit for one page of /data
MAX_ERROR_CHARS = 600


@dataclass
class Options:
    url: str
    api_key: str | None
    namespace: str | None
    timeout: float
    transport: httpx.BaseTransport | None = None  # tests: an httpx.MockTransport


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="CLUSTERFLOW_URL", help="The gateway's base URL.")] = DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option(envvar="CLUSTERFLOW_API_KEY", help="Sent as a Bearer token.")] = None,
    namespace: Annotated[str | None, typer.Option(envvar="CLUSTERFLOW_NAMESPACE",
                                                  help="Sent as X-Namespace.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds one HTTP request may take.")] = 60.0,
) -> None:
    """Cluster collections of embedded documents through the clusterflow REST API.

    \b
    clusterflow collections create docs --embedding text=384
    clusterflow ingest docs documents.parquet
    clusterflow clusters create --collection docs --name topics --param n_clusters=8
    clusterflow execute topics --wait
    clusterflow results topics
    clusterflow export topics RUN_ID members.parquet

    Exit codes: 0 ok; 1 an API error, an unreachable server or a run that did not
    complete (one line on stderr); 2 a usage error.
    """
    preset = ctx.obj if isinstance(ctx.obj, dict) else {}
    ctx.obj = Options(url=url.rstrip("/"), api_key=api_key or None, namespace=namespace or None,
                      timeout=timeout, transport=preset.get("transport"))


# --- plumbing ---------------------------------------------------------------------------

class CliError(Exception):
    """Ends a command with exit code 1 and one line on stderr (see `command`)."""


def fail(message: str) -> CliError:
    return CliError(message)


def command(group: typer.Typer, name: str | None = None) -> Callable[[Callable], Callable]:
    """`group.command(name)`, printing a CliError as one line once the command has
    unwound (so after its progress bars have stopped), then exiting 1."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except CliError as exc:
                typer.echo(f"error: {one_line(str(exc))}", err=True)
                raise typer.Exit(1) from None

        return group.command(name)(wrapper)

    return decorate


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def describe(exc: ApiError) -> str:
    """The ErrorResponse message, or the first 422 details, as one line."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        text = error.get("message") or json.dumps(error)
        details = error.get("details") or {}
        if isinstance(details, dict) and details.get("error") and len(str(details["error"])) < 200:
            text += f" ({details['error']})"
        return f"HTTP {exc.status}: {text}"
    if isinstance(body, dict) and isinstance(body.get("detail"), list):
        items = [f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                 for d in body["detail"]]
        more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
        return f"HTTP {exc.status}: invalid request: " + "; ".join(items[:3]) + more
    if isinstance(body, dict) and "detail" in body:
        return f"HTTP {exc.status}: {body['detail']}"
    return f"HTTP {exc.status}: {body or 'no body'}"


@contextmanager
def api(ctx: typer.Context) -> Iterator[Client]:
    """A client for this invocation; API and network errors leave as one line, exit 1."""
    opts: Options = ctx.obj
    client = Client(opts.url, api_key=opts.api_key, namespace=opts.namespace, timeout=opts.timeout,
                    transport=opts.transport)
    try:
        yield client
    except ApiError as exc:
        raise fail(describe(exc)) from None
    except httpx.TimeoutException:
        raise fail(f"{opts.url} did not answer within {opts.timeout:g}s") from None
    except httpx.TransportError as exc:
        raise fail(f"cannot reach {opts.url}: {exc or type(exc).__name__}") from None
    finally:
        client.close()


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _progress(console: Console = err) -> Progress:
    """A bar on stderr, shown only on a terminal (logs and pipes stay clean)."""
    return Progress(TextColumn("{task.description:<24}"), BarColumn(), TaskProgressColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=not console.is_terminal)


def parse_value(text: str) -> Any:
    """A JSON value when it parses (8, 0.5, true, null, [1,2], {"a":1}), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(values: list[str], what: str, option: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        pairs[key.strip()] = value.strip()
    return pairs


# --- collections --------------------------------------------------------------------------

@command(collections_app, "create")
def collections_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The collection's name (unique in the namespace).")],
    embedding: Annotated[list[str], typer.Option(
        "--embedding", "-e", help="A named embedding and its dimension, e.g. text=384 (repeatable).")],
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Create a collection that declares its named embeddings."""
    embeddings = {}
    for key, value in parse_pairs(embedding, "embedding", "--embedding").items():
        if not value.isdigit():
            raise typer.BadParameter(f"dimension of {key!r} must be a positive integer, got {value!r}",
                                     param_hint="--embedding")
        embeddings[key] = int(value)
    extra = {"description": description} if description else {}
    with api(ctx) as client:
        collection = client.create_collection(name, embeddings, **extra)
    if as_json:
        return print_json(collection)
    dims = ", ".join(f"{k}={v}" for k, v in collection["embeddings"].items())
    out.print(f"created collection [bold]{collection['collection_id']}[/] {collection['collection_name']!r} ({dims})")


@command(collections_app, "list")
def collections_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """List the namespace's collections with their document counts."""
    with api(ctx) as client:
        page = client.list_collections(limit=limit, offset=offset)
    if as_json:
        return print_json(page)
    table = Table(title=f"{page['pagination']['total']} collections", title_justify="left")
    for column, justify in (("collection_id", "left"), ("name", "left"), ("embeddings", "left"),
                            ("documents", "right"), ("created", "left")):
        table.add_column(column, justify=justify)
    for c in page["results"]:
        table.add_row(c["collection_id"], c["collection_name"],
                      ", ".join(f"{k}={v}" for k, v in c["embeddings"].items()),
                      f"{c.get('document_count', 0):,}", str(c["created_at"])[:19].replace("T", " "))
    out.print(table)


# --- ingest -------------------------------------------------------------------------------

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}


class RowError(Exception):
    """A row of the input file cannot become a document."""


def jsonable(value: Any) -> Any:
    """A payload value that JSON can carry (dates as ISO text, NaN as null)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    return str(value)


def to_vector(value: Any) -> list[float]:
    if isinstance(value, str):  # CSV: a JSON-encoded list
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError("embedding is not a JSON list of numbers") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise RowError(f"embedding must be a non-empty list of numbers, got {type(value).__name__}")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise RowError("embedding holds a value that is not a number") from None


def to_document(row: dict[str, Any], id_column: str, embedding_column: str, embedding_name: str) -> dict:
    if row.get(id_column) in (None, ""):
        raise RowError(f"no {id_column!r}")
    if row.get(embedding_column) is None:
        raise RowError(f"no {embedding_column!r}")
    document_id = row[id_column]
    if isinstance(document_id, float) and document_id.is_integer():
        document_id = int(document_id)
    payload = {k: jsonable(v) for k, v in row.items() if k not in (id_column, embedding_column)}
    return {"document_id": str(document_id), "payload": payload,
            "embeddings": {embedding_name: to_vector(row[embedding_column])}}


def _require(columns: list[str], needed: tuple[str, ...], path: Path) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise typer.BadParameter(f"{path.name} has no column {', '.join(map(repr, missing))} "
                                 f"(columns: {', '.join(columns[:20])})", param_hint="FILE")


def read_batches(path: Path, fmt: str, batch_size: int, needed: tuple[str, ...]) -> tuple[int, Iterator[list[dict]]]:
    """(row count, batches of row dicts). Parquet and JSONL stream; CSV is read whole
    (polars infers its column types, so numbers in the payload stay numbers)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise typer.BadParameter(f"{path.name} is not a readable parquet file: {exc}", param_hint="FILE")
        _require(parquet.schema_arrow.names, needed, path)

        def parquet_batches() -> Iterator[list[dict]]:
            for batch in parquet.iter_batches(batch_size=batch_size):
                yield pl.from_arrow(batch).to_dicts()

        return parquet.metadata.num_rows, parquet_batches()
    if fmt == "csv":
        try:
            frame = pl.read_csv(path, infer_schema_length=10_000)
        except Exception as exc:  # noqa: BLE001
            raise typer.BadParameter(f"{path.name} is not a readable CSV file: {exc}", param_hint="FILE")
        _require(frame.columns, needed, path)
        if frame.schema[needed[0]] != pl.String:
            frame = frame.with_columns(pl.col(needed[0]).cast(pl.String))

        def csv_batches() -> Iterator[list[dict]]:
            for start in range(0, frame.height, batch_size):
                yield frame.slice(start, batch_size).to_dicts()

        return frame.height, csv_batches()

    with path.open("rb") as f:
        total = sum(1 for line in f if line.strip())
    with path.open(encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), None)
    if first is not None:
        try:
            row = json.loads(first)
        except ValueError:
            raise typer.BadParameter(f"{path.name}: the first line is not JSON", param_hint="FILE") from None
        if not isinstance(row, dict):
            raise typer.BadParameter(f"{path.name}: each line must be a JSON object", param_hint="FILE")
        _require(list(row), needed, path)

    def jsonl_batches() -> Iterator[list[dict]]:
        batch: list[dict] = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise RowError(f"line {number} is not JSON") from None
                if not isinstance(row, dict):
                    raise RowError(f"line {number} is not a JSON object")
                batch.append(row)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    return total, jsonl_batches()


@command(app)
def ingest(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="Collection id or name.")],
    file: Annotated[Path, typer.Argument(help="A .parquet, .csv or .jsonl file, one document a row.",
                                         exists=True, dir_okay=False, readable=True)],
    id_column: Annotated[str, typer.Option(help="The column of document ids.")] = "document_id",
    embedding_column: Annotated[str, typer.Option(
        help="The vector column: a list column, or in CSV a JSON-encoded list.")] = "embedding",
    embedding_name: Annotated[str, typer.Option(help="The collection's embedding the vectors are.")] = "text",
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Documents per request.")] = 500,
    file_format: Annotated[str | None, typer.Option(
        "--format", help="parquet, csv or jsonl (default: from the file's extension).")] = None,
) -> None:
    """Load a file's rows as documents; every other column goes into the payload.

    Parquet goes to the bulk import (one upload, imported as a task, refused rows
    listed by row number); CSV and JSON lines are upserted in batches."""
    fmt = file_format or FORMATS.get(file.suffix.lower())
    if fmt not in ("parquet", "csv", "jsonl"):
        raise typer.BadParameter(f"cannot tell the format of {file.name!r}; use --format parquet|csv|jsonl",
                                 param_hint="--format" if file_format else "FILE")
    if id_column == embedding_column:
        raise typer.BadParameter("the id and embedding columns must differ", param_hint="--embedding-column")
    if fmt == "parquet":
        _import_parquet(ctx, collection, file, id_column, {embedding_name: embedding_column})
        return
    total, batches = read_batches(file, fmt, batch_size, (id_column, embedding_column))
    done = 0
    with api(ctx) as client:
        target = client.get_collection(collection)
        collection_id = target["collection_id"]
        with _progress() as progress:
            bar = progress.add_task(f"ingesting {file.name}"[:24], total=total)
            batch_number = 0
            try:
                for batch_number, rows in enumerate(batches, 1):
                    documents = []
                    for i, row in enumerate(rows):
                        try:
                            documents.append(to_document(row, id_column, embedding_column, embedding_name))
                        except RowError as exc:
                            raise RowError(f"row {done + i + 1}: {exc}") from None
                    try:
                        client.upsert_documents(collection_id, documents)
                    except ApiError as exc:
                        raise fail(f"batch {batch_number} (rows {done + 1}-{done + len(documents)}; "
                                   f"{done} documents were stored before it): {describe(exc)}") from None
                    done += len(documents)
                    progress.update(bar, completed=done)
            except RowError as exc:
                raise fail(f"{file.name}: {exc} ({done} documents were stored before it)") from None
    out.print(f"upserted {done:,} documents into {collection_id} ({target['collection_name']!r}) "
              f"in {batch_number} batch{'es' if batch_number != 1 else ''}")


def _import_parquet(ctx: typer.Context, collection: str, file: Path, id_column: str,
                    embedding_columns: dict[str, str]) -> None:
    with api(ctx) as client:
        target = client.get_collection(collection)
        collection_id = target["collection_id"]
        try:
            err.print(f"uploading {file.name} ({file.stat().st_size / 2**20:,.1f} MiB)")
            task = client.import_file(collection_id, str(file), id_column=id_column,
                                      embedding_columns=embedding_columns)
            task = follow(client, task["task_id"], timeout=24 * 3600)
        except ApiError as exc:
            raise fail(f"{file.name}: {describe(exc)} (nothing was imported)") from None
    result = (task.get("additional_data") or {}).get("import") or {}
    if task["status"] not in COMPLETED:
        raise fail(f"{file.name}: the import ended {task['status']}: {task.get('error') or 'no error given'} "
                   "(nothing was imported)")
    out.print(f"imported {result.get('imported', 0):,} of {result.get('rows', 0):,} documents into {collection_id} "
              f"({target['collection_name']!r})")
    if result.get("bad_row_count"):
        out.print(f"{result['bad_row_count']:,} rows refused:")
        for bad in result.get("bad_rows", [])[:20]:
            out.print(f"  row {bad['row']}: {bad.get('document_id') or '(no id)'}: {bad['reason']}")


# --- clusters -----------------------------------------------------------------------------

@command(clusters_app, "create")
def clusters_create(
    ctx: typer.Context,
    collection: Annotated[list[str], typer.Option("--collection", "-c", help="Collection id or name (repeatable).")],
    name: Annotated[str, typer.Option("--name", "-n", help="The cluster's name.")],
    method: Annotated[str | None, typer.Option(
        "--method", "-m", help="kmeans, hdbscan, ... (default: the server's, which needs no k).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="An algorithm parameter NAME=VALUE, the value parsed as JSON (repeatable).")] = None,
    embedding_name: Annotated[str | None, typer.Option(help="Which named embedding to cluster.")] = None,
    sample_size: Annotated[int | None, typer.Option(min=1, max=1_000_000)] = None,
    vis_n_components: Annotated[int, typer.Option(min=2, max=3, help="2 or 3 layout dimensions.")] = 2,
    defer_visualization: Annotated[bool, typer.Option(help="Skip the layout at execution time.")] = False,
    hierarchical: Annotated[bool, typer.Option(help="Topics over each run's clusters (auto always has them).")] = False,
    max_hierarchy_depth: Annotated[int | None, typer.Option(
        help="The hierarchy's most levels, its clusters included (server default 3).")] = None,
    layout_stability: Annotated[LayoutStability, typer.Option(
        help="How each run's map keeps the previous run's shape.")] = LayoutStability.align,
    filters: Annotated[str | None, typer.Option(help="A LogicalOperator filter as JSON.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Define a clustering of one or more collections."""
    params = {k: parse_value(v) for k, v in parse_pairs(param or [], "param", "--param").items()}
    body: dict[str, Any] = {"cluster_name": name, "algorithm_params": params,
                            "vis_n_components": vis_n_components, "defer_visualization": defer_visualization,
                            "layout_stability": layout_stability.value}
    if filters:
        try:
            body["filters"] = json.loads(filters)
        except ValueError:
            raise typer.BadParameter("not valid JSON", param_hint="--filters") from None
    if hierarchical:
        body["hierarchical"] = True
    for key, value in (("clustering_method", method), ("embedding_name", embedding_name), ("sample_size", sample_size),
                       ("description", description), ("max_hierarchy_depth", max_hierarchy_depth)):
        if value is not None:
            body[key] = value
    with api(ctx) as client:
        # Names are resolved to ids first, so that a typo reads "Collection not found: x".
        body["collection_ids"] = [client.get_collection(c)["collection_id"] for c in collection]
        cluster = client.create_cluster(**body)
    if as_json:
        return print_json(cluster)
    out.print(f"created cluster [bold]{cluster['cluster_id']}[/] {cluster['cluster_name']!r}: "
              f"{cluster['clustering_method']} {json.dumps(cluster['algorithm_params'])} on "
              f"{cluster['embedding_name']!r} of {', '.join(cluster['collection_ids'])}")


@command(clusters_app, "list")
def clusters_list(
    ctx: typer.Context,
    search: Annotated[str | None, typer.Option(help="A substring of the cluster name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """List the namespace's clusters with their last run."""
    with api(ctx) as client:
        page = client.list_clusters(limit=limit, **({"search": search} if search else {}))
    if as_json:
        return print_json(page)
    table = Table(title=f"{page['total_count']} clusters", title_justify="left")
    for column in ("cluster_id", "name", "method", "params", "collections", "last run", "status"):
        table.add_column(column)
    for c in page["results"]:
        table.add_row(c["cluster_id"], c["cluster_name"], c["clustering_method"], json.dumps(c["algorithm_params"]),
                      ", ".join(c["collection_ids"]), c.get("last_run_id") or "",
                      c.get("last_execution_status") or "")
    out.print(table)


# --- runs ---------------------------------------------------------------------------------

def view_url(opts: Options, cluster_id: str, run_id: str) -> str:
    """A link that opens the run when pasted. The key goes in the fragment, which a
    browser never sends (so no server or proxy logs it); the page sends it as a header."""
    url = f"{opts.url}/v1/clusters/{quote(cluster_id)}/executions/{quote(run_id)}/view"
    url += f"?namespace={quote(opts.namespace)}" if opts.namespace else ""
    return url + (f"#key={quote(opts.api_key, safe='')}" if opts.api_key else "")


@command(app)
def execute(
    ctx: typer.Context,
    cluster_id: Annotated[str, typer.Argument(help="Cluster id or name.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow the run with a progress bar until it ends.")] = False,
    sample_size: Annotated[int | None, typer.Option(min=1, max=1_000_000)] = None,
    vis_n_components: Annotated[int | None, typer.Option(min=2, max=3)] = None,
    defer_visualization: Annotated[bool | None, typer.Option(
        "--defer-visualization/--no-defer-visualization", help="Override the cluster's setting for this run.")] = None,
    layout_stability: Annotated[LayoutStability | None, typer.Option(
        help="Override the cluster's layout_stability for this run.")] = None,
    filters: Annotated[str | None, typer.Option(help="A LogicalOperator filter override as JSON.")] = None,
    hierarchical: Annotated[bool | None, typer.Option(
        "--hierarchical/--no-hierarchical", help="Override the cluster's setting for this run.")] = None,
    max_hierarchy_depth: Annotated[int | None, typer.Option(help="Override the cluster's setting for this run.")] = None,
    wait_timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON (the final task with --wait).")] = False,
) -> None:
    """Start a run of a cluster; with --wait, follow it to the end (exit 1 unless it COMPLETED)."""
    overrides: dict[str, Any] = {}
    for key, value in (("sample_size", sample_size), ("vis_n_components", vis_n_components),
                       ("defer_visualization", defer_visualization), ("hierarchical", hierarchical),
                       ("max_hierarchy_depth", max_hierarchy_depth),
                       ("layout_stability", layout_stability and layout_stability.value)):
        if value is not None:
            overrides[key] = value
    if filters:
        try:
            overrides["filters"] = json.loads(filters)
        except ValueError:
            raise typer.BadParameter("not valid JSON", param_hint="--filters") from None
    opts: Options = ctx.obj
    with api(ctx) as client:
        task = client.execute(cluster_id, **overrides)
        extra = task.get("additional_data") or {}
        run_id, real_cluster = extra.get("run_id", "?"), extra.get("cluster_id", cluster_id)
        if not wait:
            if as_json:
                return print_json(task)
            out.print(f"queued run [bold]{run_id}[/] of {real_cluster}: task {task['task_id']} "
                      f"(queue position {task.get('queue_position')})")
            out.print(f"follow it with: clusterflow task {task['task_id']}")
            return
        err.print(f"run {run_id} of {real_cluster}: task {task['task_id']}")
        try:
            final = follow(client, task["task_id"], wait_timeout)
        except TimeoutError as exc:
            raise fail(f"{exc}; follow it with: clusterflow task {task['task_id']}") from None
        except KeyboardInterrupt:
            err.print(f"stopped waiting; the run goes on: clusterflow task {task['task_id']}")
            raise typer.Exit(130) from None
    if as_json:
        print_json(final)
    status = final["status"]
    if status not in COMPLETED:
        raise fail(f"run {run_id} ended {status}: {final.get('error') or 'no error message'}")
    summary = (final.get("outputs") or [{}])[0] if final.get("outputs") else {}
    if not as_json:
        clusters = summary.get("num_clusters") if isinstance(summary, dict) else None
        out.print(f"run [bold]{run_id}[/] {status.lower()}"
                  + (f": {clusters} clusters" if clusters is not None else ""))
        out.print(f"results: clusterflow results {real_cluster} {run_id}")
        # Plain echo: rich would wrap a long link across lines, and it must paste whole.
        typer.echo(f"view:    {view_url(opts, real_cluster, run_id)}")


def follow(client: Client, task_id: str, timeout: float) -> dict:
    """Poll a task with a live bar fed by additional_data.progress and .stage."""
    with Progress(TextColumn("{task.description:<30}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=err, disable=not err.is_terminal) as progress:
        bar = progress.add_task("pending", total=1.0)

        def update(task: dict) -> None:
            extra = task.get("additional_data") or {}
            stage = extra.get("stage")
            text = task["status"].lower() + (f": {stage}" if stage else "")
            value = extra.get("progress") or 0.0
            if task["status"] == "COMPLETED":
                value = 1.0
            progress.update(bar, completed=float(value), description=text[:30])

        return client.wait(task_id, timeout=timeout, on_update=update)


def _cluster_sort_key(cluster_id: str) -> tuple[int, int, str]:
    match = re.fullmatch(r"cl_(-?\d+)", cluster_id)
    if match is None:
        return (1, 0, cluster_id)
    number = int(match.group(1))
    return (1 if number < 0 else 0, number, cluster_id)  # noise last


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@command(app)
def results(
    ctx: typer.Context,
    cluster_id: Annotated[str, typer.Argument(help="Cluster id or name.")],
    run_id: Annotated[str | None, typer.Argument(help="The run (default: the latest).")] = None,
    keywords: Annotated[int, typer.Option(min=0, help="Keywords shown per cluster.")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """A run's clusters: size, share, label, keywords, and the run's quality metrics."""
    with api(ctx) as client:
        execution = client.execution(cluster_id, run_id)
    if execution is None:  # the latest run of a cluster never executed: 200 with null
        raise fail(f"cluster {cluster_id} has no runs yet: clusterflow execute {cluster_id}")
    if as_json:
        return print_json(execution)
    # The task's status (UPPERCASE, as `task` and `execute` print it); `status` is the
    # hosted SDK's lowercase execution status.
    status = execution.get("task_status") or execution["status"].upper()
    points = execution.get("num_points")
    out.print(f"[bold]run {execution['run_id']}[/] of {execution['cluster_id']}: {status}"
              + (f", {execution.get('clustering_method')}" if execution.get("clustering_method") else "")
              + (f", {execution['num_clusters']} clusters" if execution.get("num_clusters") is not None else "")
              + (f" over {points:,} documents" if points else "")
              + (f", {execution['noise_count']:,} noise" if execution.get("noise_count") else ""))
    if execution.get("error_message"):
        out.print(f"[red]error:[/] {execution['error_message']}")
    metrics = execution.get("metrics") or {}
    if metrics:
        out.print(f"silhouette {_fmt(metrics.get('silhouette_score'))}  "
                  f"davies-bouldin {_fmt(metrics.get('davies_bouldin_index'))}  "
                  f"calinski-harabasz {_fmt(metrics.get('calinski_harabasz_score'), 1)}")
    centroids = sorted(execution.get("centroids") or [], key=lambda c: _cluster_sort_key(c["cluster_id"]))
    if not centroids:
        if status not in TERMINAL:
            out.print(f"no results yet ({status.lower()}, {execution.get('progress', 0):.0%})")
        return
    if any(c.get("child_cluster_ids") for c in centroids):
        return out.print(hierarchy_tree(centroids, keywords))
    total = sum(c["num_members"] for c in centroids) or 1
    table = Table()
    table.add_column("cluster")
    table.add_column("size", justify="right")
    table.add_column("share", justify="right")
    table.add_column("label")
    table.add_column("keywords")
    for c in centroids:
        noise = c["cluster_id"].endswith("_-1")
        table.add_row(c["cluster_id"] + (" (noise)" if noise else ""), f"{c['num_members']:,}",
                      f"{c['num_members'] / total:.1%}", c.get("label") or "",
                      ", ".join((c.get("keywords") or [])[:keywords]))
    out.print(table)


def hierarchy_tree(centroids: list[dict[str, Any]], keywords: int = 6) -> Tree:
    """A run's hierarchy as a tree: its top-level topics, their subtopics down to the
    clusters documents belong to (each with its size, share, label and keywords), noise last."""
    by_id = {c["cluster_id"]: c for c in centroids}
    noise = [c for c in centroids if c["cluster_id"].endswith("_-1")]
    top = [c for c in centroids if not c.get("parent_cluster_id") and c not in noise]
    clusters = [c for c in centroids if not c.get("child_cluster_ids") and c not in noise]
    total = sum(c["num_members"] for c in [*clusters, *noise]) or 1
    root = Tree(f"[bold]{len(top)} topics[/] over {len(clusters)} clusters")

    def line(c: dict[str, Any]) -> str:
        words = ", ".join((c.get("keywords") or [])[:keywords])
        return (f"[bold]{escape(c.get('label') or c['cluster_id'])}[/] [dim]{c['cluster_id']}[/] "
                f"{c['num_members']:,} ({c['num_members'] / total:.1%})"
                + (f" [dim]· {escape(words)}[/]" if words else ""))

    seen: set[str] = set()  # a malformed answer cannot make the walk loop

    def grow(branch: Tree, c: dict[str, Any]) -> None:
        seen.add(c["cluster_id"])
        node = branch.add(line(c))
        for child in sorted((by_id[k] for k in c.get("child_cluster_ids") or [] if k in by_id and k not in seen),
                            key=lambda x: -x["num_members"]):
            grow(node, child)

    for c in sorted(top, key=lambda x: -x["num_members"]):
        grow(root, c)
    for c in noise:
        root.add(f"[dim]noise {c['cluster_id']} {c['num_members']:,} ({c['num_members'] / total:.1%})[/]")
    return root


EXPORT_SCHEMA = {"document_id": pl.String, "cluster_id": pl.String, "distance_to_centroid": pl.Float64,
                 "x": pl.Float64, "y": pl.Float64, "z": pl.Float64}


@command(app)
def export(
    ctx: typer.Context,
    cluster_id: Annotated[str, typer.Argument(help="Cluster id or name.")],
    run_id: Annotated[str, typer.Argument(help="The run.")],
    output: Annotated[Path, typer.Argument(help="OUT.parquet or OUT.csv", dir_okay=False)],
    page_size: Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="Members per request.")] = MAX_PAGE,
) -> None:
    """Write a run's members (document_id, cluster_id, distance_to_centroid, x, y, z) to a file."""
    kind = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(output.suffix.lower())
    if kind is None:
        raise typer.BadParameter("the output must end in .parquet or .csv", param_hint="OUTPUT")
    if not output.parent.exists():
        raise typer.BadParameter(f"no such directory: {output.parent}", param_hint="OUTPUT")
    frames = []
    with api(ctx) as client, _progress() as progress:
        bar = progress.add_task("exporting members", total=None)
        for page in client.member_pages(cluster_id, run_id, page_size,
                                        on_total=lambda n: progress.update(bar, total=n)):
            if page:
                frames.append(pl.DataFrame([{k: m.get(k) for k in EXPORT_SCHEMA} for m in page],
                                           schema=EXPORT_SCHEMA))
            progress.advance(bar, len(page))
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=EXPORT_SCHEMA)
    partial = output.with_name(f".{output.name}.partial")
    if kind == "parquet":
        frame.write_parquet(partial)
    else:
        frame.write_csv(partial)
    os.replace(partial, output)
    out.print(f"wrote {frame.height:,} members to {output}")


@command(app)
def task(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id execute printed.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """A task's status, progress, stage and error."""
    with api(ctx) as client:
        t = client.task(task_id)
    if as_json:
        return print_json(t)
    extra = t.get("additional_data") or {}
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [("task", t["task_id"]), ("type", t["task_type"]), ("status", t["status"]),
            ("progress", f"{float(extra.get('progress') or 0):.0%}"), ("stage", extra.get("stage")),
            ("cluster", extra.get("cluster_id")), ("run", extra.get("run_id")),
            ("queue position", t.get("queue_position")), ("error", t.get("error"))]
    for key, value in rows:
        if value is not None:
            table.add_row(key, str(value))
    out.print(table)


# --- the local system -----------------------------------------------------------------------

@command(app)
def up(
    ctx: typer.Context,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Start in the background and return.")] = False,
    host: Annotated[str, typer.Option(help="The gateway's address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="CLUSTERFLOW_GATEWAY_PORT", help="The gateway's port.")] = 8000,
    metrics_port_base: Annotated[int, typer.Option(
        help="The workers' /metrics ports: preparer, clusterer, labeler, status from here on; 0: none.")] = 9101,
    state_dir: Annotated[Path | None, typer.Option(
        envvar="CLUSTERFLOW_UP_DIR", help="supervisord's config, pid and logs (default $CLUSTERFLOW_HOME/up).")] = None,
) -> None:
    """Run the whole local system: servers, migrations, the five services; Ctrl-C stops it.

    Prints the gateway URL, the namespace (--namespace, "default") with a new API key
    (or the --api-key given) and the next commands, then streams the services' logs.
    """
    local = _server_side()
    opts: Options = ctx.obj
    namespace = opts.namespace or "default"
    layout = local.Layout(state_dir=state_dir or local.default_state_dir())
    plan = local.Plan(host=host, port=port, metrics_port_base=metrics_port_base)
    try:
        code = local.up(plan=plan, layout=layout, namespace=namespace, api_key=opts.api_key, detach=detach,
                        say=typer.echo, program=local.program_name())
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C before the services started (servers, migrations)
        typer.echo("interrupted before the services started", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _server_side():
    """`up` and `down` run the server; the other commands need only the client's packages."""
    try:
        from clusterflow import up
    except ImportError as exc:
        typer.echo(f"`clusterflow up` needs the server's packages ({exc.name} is missing): "
                   "pip install 'clusterflow[server]'", err=True)
        raise typer.Exit(2) from None
    return up


@command(app)
def down(
    servers: Annotated[bool, typer.Option("--servers", help="Also stop Kafka, PostgreSQL and S3.")] = False,
    state_dir: Annotated[Path | None, typer.Option(envvar="CLUSTERFLOW_UP_DIR",
                                                   help="The state directory `up` used.")] = None,
) -> None:
    """Stop what `clusterflow up` started (the services; with --servers the servers too)."""
    local = _server_side()

    try:
        local.down(layout=local.Layout(state_dir=state_dir or local.default_state_dir()), servers=servers,
                   say=typer.echo)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise fail(str(exc)) from None


# Handy for `python -m clusterflow.client.cli`.
if __name__ == "__main__":
    app()
