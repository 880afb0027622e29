"""The main job, end to end: start the services, load the sample dataset, execute a
clustering, show its progress, print a per-cluster summary.

An honest demo: the documents go in with their title and text only, so the labels
come from what a user's own documents would give the labeler. The sample's category
stays in this process, to score the result (ARI) and to show each cluster's main
category, and is never sent. By default the cluster is created with no method and no
k (the server's default, which picks k itself); for comparison the demo prints the ARI
of scikit-learn's KMeans given the true number of categories, on the same vectors.

Run through `scripts/demo.sh` (which starts the servers first): the demo then starts the
five services itself (`clusterflow.stack.local_services`, imported only then). With
`--url` (and `--api-key`) it is a plain client of a gateway that is already running, and
needs only the client's dependencies.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from clusterflow.client import Client

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_documents.parquet"
NAMESPACE = "demo"
console = Console(width=max(Console().width, 120))


def load_sample(client: Client, frame: pl.DataFrame, name: str) -> str:
    dim = frame["embedding"].dtype.shape[0]
    collection = client.create_collection(name, {"text": dim}, description="clusterflow sample dataset")
    rows = frame.to_dicts()
    with _progress() as progress:
        bar = progress.add_task("loading documents", total=len(rows))
        for start in range(0, len(rows), 500):
            batch = rows[start:start + 500]
            client.upsert_documents(collection["collection_id"], [
                # No category: the labeler reads the payload's strings, and would name the
                # clusters after the answer.
                {"document_id": r["document_id"], "payload": {"title": r["title"], "text": r["text"]},
                 "embeddings": {"text": list(r["embedding"])}}
                for r in batch
            ])
            progress.advance(bar, len(batch))
    return collection["collection_id"]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<22}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), console=console)


def log_dir() -> Path:
    """Where the services started here write their logs: under CLUSTERFLOW_HOME, as
    `deploy/local/servers.sh` keeps the servers' (default ~/.clusterflow)."""
    home = os.environ.get("CLUSTERFLOW_HOME") or str(Path.home() / ".clusterflow")
    return Path(home).expanduser() / "logs" / "services"


@contextmanager
def _gateway(url: str | None, api_key: str | None) -> Iterator[tuple[str, str | None]]:
    """(the gateway's URL, an API key): the one given, or services started here."""
    if url:
        yield url, api_key
        return
    from clusterflow.stack import local_services  # the server side: only when starting it

    logs = log_dir()
    console.print(f"[bold]starting the services[/] (logs in {logs})")
    with local_services(logs, namespace=NAMESPACE) as started:
        yield started


def run(method: str | None, n_clusters: int | None, url: str | None = None, api_key: str | None = None) -> int:
    frame = pl.read_parquet(SAMPLE)
    with _gateway(url, api_key) as (base_url, key):
        client = Client(base_url, namespace=NAMESPACE, api_key=key)
        try:
            return _run(client, frame, method, n_clusters)
        finally:
            client.close()


def _run(client: Client, frame: pl.DataFrame, method: str | None, n_clusters: int | None) -> int:
    name = f"sample-{time.strftime('%Y%m%d-%H%M%S')}"
    collection_id = load_sample(client, frame, name)
    # Only what was asked for: no method and no k is the server's default configuration.
    chosen = {"clustering_method": method} if method else {}
    if n_clusters:
        chosen["algorithm_params"] = {"n_clusters": n_clusters}
    cluster = client.create_cluster(collection_ids=[collection_id], cluster_name=name, embedding_name="text",
                                    **chosen)
    method = cluster["clustering_method"]
    task = client.execute(cluster["cluster_id"])
    console.print(f"executing [bold]{method}[/] on {frame.height} documents: task {task['task_id']}")
    with _progress() as progress:
        bar = progress.add_task("clustering", total=1.0)

        def update(t: dict) -> None:
            extra = t.get("additional_data") or {}
            progress.update(bar, completed=extra.get("progress", 0.0),
                            description=f"{t['status'].lower()}: {extra.get('stage') or ''}"[:22])

        done = client.wait(task["task_id"], on_update=update)
    if done["status"] != "COMPLETED":
        console.print(f"[red]run ended {done['status']}: {done.get('error')}[/]")
        return 1
    print_summary(client, cluster["cluster_id"], done["additional_data"]["run_id"], frame,
                  given=f"k={n_clusters} given" if n_clusters else "no k given")
    return 0


def labeled_execution(client: Client, cluster_id: str, run_id: str, wait_s: float = 20.0) -> dict:
    """The finished run, once the labeler's labels are in (they follow completion)."""
    deadline = time.monotonic() + wait_s
    while True:
        execution = client.execution(cluster_id, run_id)
        if all(c.get("label") for c in execution["centroids"]) or time.monotonic() > deadline:
            return execution
        time.sleep(0.5)


def kmeans_true_k_ari(frame: pl.DataFrame, seed: int = 0) -> tuple[int, float]:
    """The yardstick: scikit-learn's KMeans told the true number of categories, on the
    same vectors; its ARI against the categories."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    k = frame["category"].n_unique()
    X = frame["embedding"].to_numpy()
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    return k, adjusted_rand_score(frame["category"].to_list(), labels)


def print_summary(client: Client, cluster_id: str, run_id: str, frame: pl.DataFrame, given: str) -> None:
    from sklearn.metrics import adjusted_rand_score  # scoring only; scikit-learn comes with the server

    execution = labeled_execution(client, cluster_id, run_id)
    members = pl.DataFrame(list(client.members(cluster_id, run_id)))
    joined = members.join(frame.select("document_id", "title", "text", "category"), on="document_id")
    metrics = execution.get("metrics") or {}
    ari = adjusted_rand_score(joined["category"].to_list(), joined["cluster_id"].to_list())
    k, baseline = kmeans_true_k_ari(frame)
    quality = "  ".join(f"{name} {metrics[key]:.3f}" for name, key in
                        (("silhouette", "silhouette_score"), ("davies-bouldin", "davies_bouldin_index"))
                        if metrics.get(key) is not None)
    console.print(
        f"\n[bold]{execution['num_clusters']} clusters over {execution['num_points']} documents[/] "
        f"({execution.get('clustering_method')}, {given})  {quality}\n"
        f"agreement with the {k} known categories (ARI): this run {ari:.2f}; "
        f"KMeans given the true k={k} {baseline:.2f}\n")
    table = Table(show_lines=True)
    table.add_column("cluster: label")
    table.add_column("size", justify="right")
    table.add_column("main category (share)")
    table.add_column("members nearest the centre")
    for centroid in execution["centroids"]:
        group = joined.filter(pl.col("cluster_id") == centroid["cluster_id"]).sort("distance_to_centroid")
        if group.height == 0:
            continue
        category, count = Counter(group["category"].to_list()).most_common(1)[0]
        examples = "\n".join(f"• [bold]{title}[/]: {text[:80]}…" for title, text in
                              group.select("title", "text").head(3).iter_rows())
        label = f"{centroid['cluster_id']}: {centroid.get('label') or '-'}"
        keywords = ", ".join((centroid.get("keywords") or [])[:4])
        table.add_row(f"{label}\n[dim]{keywords}[/]", str(group.height),
                      f"{category} ({count / group.height:.0%})", examples)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default=None, help="default: the server's (no k needed)")
    parser.add_argument("--n-clusters", type=int, default=None, help="default: none given")
    parser.add_argument("--url", default=None, help="a running gateway (default: start the services here)")
    parser.add_argument("--api-key", default=None, help="with --url: the key for the namespace 'demo'")
    args = parser.parse_args()
    raise SystemExit(run(args.method, args.n_clusters, args.url, args.api_key))


if __name__ == "__main__":
    main()
