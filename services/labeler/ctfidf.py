"""Labels from the text itself: class-based TF-IDF (c-TF-IDF, as in BERTopic).

Each cluster's member texts are joined into one document per class; a term's weight in
a class is its frequency in that class (normalised by the class's length) times
`log(1 + A / f_t)`, where `A` is the average number of words per class and `f_t` the
term's frequency over all classes. Terms common to every cluster sink; terms that set a
cluster apart rise. English stop words (scikit-learn's list) are removed, unigrams and
bigrams (of adjacent words) are counted.

The label is the top 2-3 keywords, title-cased, made unique across clusters; no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import re

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

# Words of at least two characters that start with a letter: numbers and ids say
# little about a topic.
TOKEN_PATTERN = re.compile(r"(?u)\b[^\W\d_][\w'-]*[^\W_]\b")
_SEPARATOR = "\x1e"  # between the member texts of one class: no bigram spans two documents


def analyze(text: str) -> list[str]:
    """Unigrams and bigrams, stop words out. A bigram is two *adjacent* words, so
    "state of the art" gives no "state art" (scikit-learn's analyzer would)."""
    terms: list[str] = []
    for doc in text.split(_SEPARATOR):
        tokens = TOKEN_PATTERN.findall(doc.lower())
        keep = [t not in ENGLISH_STOP_WORDS for t in tokens]
        terms.extend(t for t, k in zip(tokens, keep) if k)
        terms.extend(f"{a} {b}" for a, b, ka, kb in zip(tokens, tokens[1:], keep, keep[1:]) if ka and kb)
    return terms


@dataclass
class Keywords:
    terms: list[str]
    scores: list[float]


def class_tfidf(texts_by_class: Mapping[str, Sequence[str]], top_n: int = 10) -> dict[str, Keywords]:
    """The top `top_n` c-TF-IDF terms of each class (classes with no words get none)."""
    classes = list(texts_by_class)
    docs = [_SEPARATOR.join(t for t in texts_by_class[c] if t) for c in classes]
    empty = {c: Keywords([], []) for c in classes}
    if not any(d.strip() for d in docs):
        return empty
    vectorizer = CountVectorizer(analyzer=analyze, dtype=np.float64)
    try:
        counts = vectorizer.fit_transform(docs)  # (classes, terms), sparse
    except ValueError:  # only stop words
        return empty
    terms = vectorizer.get_feature_names_out()
    # Words per class counts unigrams only, as BERTopic counts tokens.
    is_unigram = np.array([" " not in t for t in terms])
    words_per_class = np.asarray(counts[:, is_unigram].sum(axis=1)).ravel()
    avg_words = max(float(words_per_class.mean()), 1.0)
    freq = np.asarray(counts.sum(axis=0)).ravel()
    idf = np.log(1.0 + avg_words / np.maximum(freq, 1e-12))
    row_sums = np.asarray(counts.sum(axis=1)).ravel()
    tf = counts.multiply(1.0 / np.maximum(row_sums, 1e-12)[:, None]).tocsr()
    weights = tf.multiply(idf[None, :]).tocsr()

    out: dict[str, Keywords] = {}
    for i, c in enumerate(classes):
        row = weights.getrow(i)
        if row.nnz == 0:
            out[c] = Keywords([], [])
            continue
        order = np.argsort(-row.data, kind="stable")[: top_n * 3]
        picked = _drop_redundant([(terms[row.indices[j]], float(row.data[j])) for j in order], top_n)
        out[c] = Keywords([t for t, _ in picked], [s for _, s in picked])
    return out


def _drop_redundant(ranked: list[tuple[str, float]], top_n: int) -> list[tuple[str, float]]:
    """Keep terms that add something: a unigram inside a kept bigram is dropped, a
    bigram made of kept words too; a bigram that scores at least 3/4 of a kept
    unigram it contains replaces it ("extra" then "extra time": "extra time")."""
    kept: list[tuple[str, float]] = []
    for term, score in ranked:
        parts = term.split()
        if len(parts) > 1:
            inside = [i for i, (k, s) in enumerate(kept) if " " not in k and k in parts and score >= 0.75 * s]
            if inside:
                kept[inside[0]] = (term, kept[inside[0]][1])
                for i in reversed(inside[1:]):
                    del kept[i]
                continue
        words = {w for k, _ in kept for w in k.split()}
        if set(parts) <= words:
            continue
        if len(parts) == 1 and any(term in k.split() for k, _ in kept):
            continue
        if len(kept) == top_n:
            break
        kept.append((term, score))
    return kept[:top_n]


def label_from_keywords(terms: Sequence[str], n: int = 3) -> str:
    """`n` keywords, title-cased ("Rocket Launch, Orbit"); 2 when one is a bigram."""
    chosen: list[str] = []
    words = 0
    for term in terms:
        if len(chosen) >= n or words >= 3:
            break
        chosen.append(term)
        words += len(term.split())
    return ", ".join(_title(t) for t in chosen)


def _title(term: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in term.split())


def unique_labels(candidates: Mapping[str, str], keywords: Mapping[str, Sequence[str]],
                  taken: set[str] | None = None) -> dict[str, str]:
    """Make labels unique (case-insensitively), in the mapping's order: a repeated label
    gets the cluster's next keyword not already in it, else a number."""
    used = {t.casefold() for t in (taken or set())}
    out: dict[str, str] = {}
    for cid, label in candidates.items():
        label = label or cid
        if label.casefold() in used:
            label = disambiguate(label, keywords.get(cid, ()), used)
        used.add(label.casefold())
        out[cid] = label
    return out


def disambiguate(label: str, keywords: Sequence[str], used: set[str]) -> str:
    """The label plus the first keyword it lacks that makes it unused; else numbered."""
    present = set(label.casefold().replace(",", " ").split())
    for term in keywords:
        if set(term.casefold().split()) <= present:
            continue
        candidate = f"{label} ({_title(term)})"
        if candidate.casefold() not in used:
            return candidate
    n = 2
    while f"{label} ({n})".casefold() in used:
        n += 1
    return f"{label} ({n})"
