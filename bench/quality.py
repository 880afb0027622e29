"""Benchmark: clustering quality on labelled sets, the service's default beside anchors.

    eval "$(deploy/local/servers.sh env)"
    .venv/bin/python bench/quality.py [--sets wiki7 wiki11 debian digits] [--skip-slow-anchors]

Sets (bench/data/README.md says where each comes from and its licence):
  wiki7    clusterflow/data/sample_documents.parquet: 1,750 Wikipedia leads, 7 topics
  wiki11   bench/data/wiki_vital11.parquet: 2,750 Wikipedia leads, all 11 vital-article topics
  debian   bench/data/debian_sections.parquet: 2,412 Debian 12 package descriptions, 12 sections
  digits   scikit-learn's handwritten digits: 1,797 8x8 images (64-d), 10 classes
The text sets carry all-MiniLM-L6-v2 embeddings (384-d).

"default" goes through the service: documents upserted over REST (payload: the text
only, never the category), a cluster created with nothing but its collection (so the
method is the default, auto), executed, and read back through the data endpoint;
"seconds" is execute -> COMPLETED, labels included (layout deferred: not clustering).
"kmeans_auto" is the engine's kmeans with n_clusters "auto" (in this process).

Anchors, in this process on the same arrays:
  kmeans_true_k   KMeans given the true number of classes (n_init 10, random_state 42)
  bertopic        UMAP(5, cosine, min_dist 0) + HDBSCAN(min_cluster_size 10), BERTopic's default
  evoc            EVoC with its defaults (PyPI evoc)
  knn_leiden      cosine kNN graph (15 neighbours, weights 1 - distance) + Leiden
                  (RBConfiguration, resolution 1, seed 42)

Scores: ARI and NMI against the classes over every document (noise counts as one more
cluster, so a method gains nothing by discarding hard points), the noise share, the
cluster count (noise excluded) and seconds. ``label_share`` (default only): among
clusters whose majority class holds more than 50 % of the members, the share whose label
or keywords name that class (a word of the class's name, or of its synonyms below, in
the label or keywords, case- and plural-insensitive). ``hierarchy`` (default only): the
run's topics over its clusters, its levels and top-level topics, the ARI of each
document's top-level topic against the classes, and the label share over the topics.
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fresh_settings, running_stack  # noqa: E402
from services.clusterer.engine import run_clustering, warm_up  # noqa: E402
from services.clusterer.engine.graph import knn, leiden, similarity_weights  # noqa: E402

SETS = {
    "wiki7": ROOT / "clusterflow" / "data" / "sample_documents.parquet",
    "wiki11": ROOT / "bench" / "data" / "wiki_vital11.parquet",
    "debian": ROOT / "bench" / "data" / "debian_sections.parquet",
    "digits": None,
}
# Words that name a class besides the words of its own name (for label_share).
SYNONYMS = {
    "Arts": ["art", "music", "film", "painting", "literature", "novel", "artist", "song", "album", "theatre"],
    "Biology and health sciences": ["biology", "health", "disease", "species", "medicine", "medical", "cell",
                                    "animal", "plant", "anatomy"],
    "Everyday life": ["sport", "food", "game", "everyday", "drink", "clothing", "recreation"],
    "Geography": ["country", "city", "river", "mountain", "island", "region", "lake", "capital", "geography"],
    "History": ["war", "empire", "dynasty", "century", "history", "historical", "battle", "revolution"],
    "Mathematics": ["mathematics", "mathematical", "number", "theorem", "function", "geometry", "algebra"],
    "People": ["born", "people", "writer", "politician", "poet", "painter", "composer", "philosopher", "king"],
    "Philosophy and religion": ["philosophy", "religion", "god", "religious", "church", "christian", "buddhism",
                                "belief", "myth", "islam"],
    "Physical sciences": ["physics", "chemistry", "chemical", "element", "astronomy", "star", "planet",
                          "energy", "atom", "earth"],
    "Society and social sciences": ["society", "social", "economic", "political", "law", "language",
                                    "government", "economy"],
    "Technology": ["technology", "engineering", "machine", "device", "computer", "vehicle", "electric"],
    "database": ["database", "sql", "query", "postgresql", "mysql", "data"],
    "editors": ["editor", "editing", "text", "vim", "emacs"],
    "electronics": ["electronics", "circuit", "electronic", "fpga", "pcb", "microcontroller", "simulation"],
    "fonts": ["font", "typeface", "glyph"],
    "games": ["game", "player", "puzzle", "play"],
    "graphics": ["graphics", "image", "images", "picture", "photo", "svg", "drawing"],
    "hamradio": ["radio", "amateur", "ham", "antenna", "transceiver"],
    "mail": ["mail", "email", "e-mail", "imap", "smtp", "message"],
    "math": ["math", "mathematics", "mathematical", "algebra", "numerical", "equation"],
    "sound": ["sound", "audio", "music", "midi", "synthesizer"],
    "video": ["video", "media", "movie", "player", "dvd"],
    "web": ["web", "http", "html", "browser", "server", "website"],
}


def load_set(name: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if SETS[name] is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data.astype(np.float32), np.array([str(t) for t in digits.target]), None
    df = pl.read_parquet(SETS[name])
    X = np.asarray(df["embedding"].cast(pl.Array(pl.Float32, df["embedding"].dtype.size)).to_numpy(),
                   dtype=np.float32)
    return X, df["category"].to_numpy(), df["text"].to_list()


def scores(y: np.ndarray, labels: np.ndarray, seconds: float) -> dict:
    labels = np.asarray(labels)
    return {
        "ari": round(float(adjusted_rand_score(y, labels)), 4),
        "nmi": round(float(normalized_mutual_info_score(y, labels)), 4),
        "noise": round(float(np.mean(labels == -1)), 4),
        "clusters": int(len(set(labels.tolist()) - {-1})),
        "seconds": round(seconds, 2),
    }


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def anchors(X: np.ndarray, y: np.ndarray, slow: bool) -> dict:
    from sklearn.cluster import KMeans

    out = {}
    k = len(set(y.tolist()))
    labels, s = timed(lambda: KMeans(n_clusters=k, n_init=10, random_state=42).fit_predict(X))
    out["kmeans_true_k"] = scores(y, labels, s)

    def knn_leiden():
        idx, dist = knn(X, 15, "cosine")
        return leiden(idx, similarity_weights(dist, "cosine"), resolution=1.0, n_iterations=-1, seed=42).labels

    labels, s = timed(knn_leiden)
    out["knn_leiden"] = scores(y, labels, s)
    if slow:
        import evoc
        import hdbscan
        import umap

        def bertopic():
            Z = umap.UMAP(n_components=5, metric="cosine", min_dist=0.0, random_state=42).fit_transform(X)
            return hdbscan.HDBSCAN(min_cluster_size=10).fit_predict(Z)

        labels, s = timed(bertopic)
        out["bertopic"] = scores(y, labels, s)
        labels, s = timed(lambda: evoc.EVoC(random_state=42).fit_predict(X))
        out["evoc"] = scores(y, labels, s)
    labels, s = timed(lambda: run_clustering(X, "kmeans", {"n_clusters": "auto"}).labels)
    out["kmeans_auto"] = scores(y, labels, s)
    return out


def _words(text: str) -> set[str]:
    words = set()
    for w in re.findall(r"[a-z][a-z\-]+", text.lower()):
        words.add(w)
        words.add(w[:-1] if w.endswith("s") and len(w) > 3 else w)
    return words


def label_share(y_of: dict[str, str], members: dict[str, str], centroids: list[dict]) -> dict:
    """Among clusters whose majority class holds > 50 % of members, the share whose label or
    keywords name the class (see the module docstring)."""
    by_cluster: dict[str, list[str]] = {}
    for doc, cluster in members.items():
        by_cluster.setdefault(cluster, []).append(y_of[doc])
    named = eligible = 0
    examples = []
    for c in centroids:
        classes = by_cluster.get(c["cluster_id"])
        if c["cluster_id"] == "cl_-1" or not classes:
            continue
        values, counts = np.unique(classes, return_counts=True)
        top = int(counts.argmax())
        if counts[top] / len(classes) <= 0.5:
            continue
        eligible += 1
        majority = str(values[top])
        vocabulary = _words(majority) - {"and", "of", "the"} | _words(" ".join(SYNONYMS.get(majority, [])))
        said = _words(" ".join([c.get("label") or "", *(c.get("keywords") or [])]))
        hit = bool(vocabulary & said)
        named += hit
        if len(examples) < 4:
            examples.append(f"{majority}: {c.get('label')!r}{'' if hit else ' (miss)'}")
    return {"share": round(named / eligible, 3) if eligible else None, "eligible": eligible, "examples": examples}


def through_service(client, name: str, X: np.ndarray, y: np.ndarray, texts: list[str] | None) -> dict:
    collection = client.create_collection(f"quality-{name}", {"text": X.shape[1]})
    ids = [f"doc_{i:05d}" for i in range(len(X))]
    for start in range(0, len(X), 500):
        client.upsert_documents(collection["collection_id"], [
            {"document_id": ids[i], "payload": {"text": texts[i]} if texts else {"image": f"digit {i}"},
             "embeddings": {"text": X[i].tolist()}}
            for i in range(start, min(start + 500, len(X)))])
    cluster = client.create_cluster(collection_ids=[collection["collection_id"]], cluster_name=f"quality {name}",
                                    defer_visualization=True)
    started = time.perf_counter()
    task = client.execute(cluster["cluster_id"])
    done = client.wait(task["task_id"], timeout=1800, interval=0.1, max_interval=0.5)
    seconds = time.perf_counter() - started
    assert done["status"] == "COMPLETED", done
    run_id = task["additional_data"]["run_id"]
    members = {m["document_id"]: m["cluster_id"] for m in client.members(cluster["cluster_id"], run_id)}
    labels = np.array([int(members[i].split("_")[1]) for i in ids])
    out = scores(y, labels, seconds)
    out["method"] = cluster["clustering_method"]
    choice = done["additional_data"].get("method_choice") or {}
    out["choice"] = {k: choice.get(k) for k in ("criterion", "scores", "communities", "small_communities_merged")}
    if texts:
        # Keyword labels arrive from the labeler just after the run completes.
        deadline = time.monotonic() + 120
        while True:
            centroids = client.execution(cluster["cluster_id"], run_id)["centroids"]
            if all(c.get("label") for c in centroids if c["cluster_id"] != "cl_-1") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        out["labels"] = label_share(dict(zip(ids, y.tolist())), members, centroids)
    else:
        centroids = client.execution(cluster["cluster_id"], run_id)["centroids"]
    out["hierarchy"] = hierarchy_scores(ids, y, members, centroids, texts is not None)
    return out


def hierarchy_scores(ids: list[str], y: np.ndarray, members: dict[str, str], centroids: list[dict],
                     labelled: bool) -> dict:
    """The run's topics: how many levels and top-level topics, the ARI of every document's
    top-level topic against the classes, and (text sets) the label share over the topics."""
    parent = {c["cluster_id"]: c.get("parent_cluster_id") for c in centroids}
    levels = 1 + max((c.get("hierarchy_level") or 0 for c in centroids), default=0)

    def top(cluster: str) -> str:
        seen = set()
        while parent.get(cluster) and cluster not in seen:
            seen.add(cluster)
            cluster = parent[cluster]
        return cluster

    tops = {doc: top(cluster) for doc, cluster in members.items()}
    roots = [c for c in centroids if c.get("child_cluster_ids") and not c.get("parent_cluster_id")]
    out = {"levels": levels, "topics": len({tops[i] for i in ids if tops[i] != "cl_-1"}),
           "top_level_ari": round(float(adjusted_rand_score(y, [tops[i] for i in ids])), 3)}
    if labelled:
        # the share over the topics over >= 2 clusters (the other top-level entries are clusters)
        out["labels"] = label_share(dict(zip(ids, y.tolist())), {d: t for d, t in tops.items()}, roots)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--skip-slow-anchors", action="store_true", help="leave out UMAP + HDBSCAN and EVoC")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    warm_up()
    data = {name: load_set(name) for name in args.sets}
    results: dict[str, dict] = {}
    settings = fresh_settings("clusterflow_quality")
    with running_stack(settings) as (_, client):
        for name, (X, y, texts) in data.items():
            results[name] = {"n": len(X), "classes": len(set(y.tolist())),
                             "default": through_service(client, name, X, y, texts)}
            print(f"{name}: default {results[name]['default']}", flush=True)
    for name, (X, y, _) in data.items():
        results[name]["anchors"] = anchors(X, y, slow=not args.skip_slow_anchors)
        for anchor, s in results[name]["anchors"].items():
            print(f"{name}: {anchor:<14} {s}", flush=True)

    print(f"\n{'set':<8} {'config':<14} {'ARI':>6} {'NMI':>6} {'noise':>6} {'k':>4} {'s':>7}")
    for name, r in results.items():
        for config, s in [("default", r["default"]), *r["anchors"].items()]:
            print(f"{name:<8} {config:<14} {s['ari']:>6.3f} {s['nmi']:>6.3f} {s['noise']:>6.3f} "
                  f"{s['clusters']:>4} {s['seconds']:>7.2f}")
    targets = {}
    for name, r in results.items():
        reference = [s["ari"] for a, s in r["anchors"].items() if a != "kmeans_auto"]
        targets[name] = {
            "default_ari_at_or_above_best_anchor": r["default"]["ari"] >= max(reference),
            "default_noise_at_most_10pct": r["default"]["noise"] <= 0.10,
            "kmeans_auto_at_or_above_true_k": r["anchors"]["kmeans_auto"]["ari"] >= r["anchors"]["kmeans_true_k"]["ari"],
            # None where the set has no texts (digits) to label.
            "label_share_at_least_80pct": None if "labels" not in r["default"]
            else (r["default"]["labels"]["share"] or 0) >= 0.8,
        }
    print(json.dumps({"benchmark": "quality", "sets": results, "targets": targets}, default=str))


if __name__ == "__main__":
    main()
