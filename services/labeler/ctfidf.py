"""Labels from the text itself: class-based TF-IDF (c-TF-IDF, as in BERTopic).

Each cluster's member texts are joined into one document per class; a term's weight in
a class is its frequency in that class (normalised by the class's length) times
`log(1 + A / f_t)`, where `A` is the average number of words per class and `f_t` the
term's frequency over all classes. Terms common to every cluster sink; terms that set a
cluster apart rise. Stop words are removed: scikit-learn's English list, contractions
("don't", "it's", "we'll": a stop word or an auxiliary before the apostrophe) and
fillers that name no topic ("just", "really", "man", "thing", "know"...), so a label is
never made of them; a possessive counts as its word ("earth's" is "earth"). Unigrams and
bigrams (of adjacent words) are counted, and a bigram that scores near its words is
preferred to them (a keyphrase); within one label the keywords are diverse (no word
twice, no singular beside its plural).

The label is the top 2-3 keywords, title-cased, made unique across clusters; no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import os
import re

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

# Words of at least two characters that start with a letter: numbers and ids say
# little about a topic.
TOKEN_PATTERN = re.compile(r"(?u)\b[^\W\d_][\w'-]*[^\W_]\b")
_SEPARATOR = "\x1e"  # between the member texts of one class: no bigram spans two documents


# Words that say nothing about a topic in chat, reviews, tickets and prose alike.
FILLERS = frozenset("""
    just really actually basically literally simply pretty quite totally definitely probably maybe
    like likely yeah yes yep nope ok okay oh ah uh um hey hi hello lol omg wow please thanks thank
    gonna wanna gotta kinda sorta man guy guys dude stuff thing things lot lots bit way ways kind sort
    know think thought get gets getting got gotten make makes making made say says said tell told
    want wants wanted need needs needed use uses used using try tried going go goes went gone come
    came let lets look looks looked good great nice bad better best new old big little right sure
    also would could should might must may shall will can one two many much every lot day days time
    times year years include includes including known called based various etc
""".split())
# Before an apostrophe: auxiliaries whose contractions ("don't", "isn't") are stop words.
_AUXILIARIES = frozenset("don doesn didn isn aren wasn weren haven hasn hadn won wouldn shouldn couldn "
                         "can ain mustn needn mightn shan".split())
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | FILLERS
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def _normalise(token: str) -> str | None:
    """The token as counted, or None for a stop word: "Earth's" -> "earth", "don't" -> None."""
    if "'" in token:
        base, _, suffix = token.partition("'")
        if base in STOP_WORDS or base in _AUXILIARIES or suffix not in ("s", ""):
            return None  # a contraction ("we'll", "it's", "don't") or an odd form
        token = base  # a possessive: the word itself
    return None if token in STOP_WORDS or len(token) < 2 else token


def analyze(text: str) -> list[str]:
    """Unigrams and bigrams, stop words out. A bigram is two *adjacent* words, so
    "state of the art" gives no "state art" (scikit-learn's analyzer would)."""
    terms: list[str] = []
    for doc in text.split(_SEPARATOR):
        words = [_normalise(t) for t in TOKEN_PATTERN.findall(doc.lower().translate(_APOSTROPHES))]
        keep = [w is not None for w in words]
        tokens = [w or "" for w in words]
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
            others = {w for i, (k, _) in enumerate(kept) if i not in inside for w in k.split()}
            if inside and any(_same_stem(p, w) for p in parts for w in others):
                continue  # "strategy" -> "strategy game" would repeat the kept "game"
            if inside:
                kept[inside[0]] = (term, kept[inside[0]][1])
                for i in reversed(inside[1:]):
                    del kept[i]
                continue
        words = {w for k, _ in kept for w in k.split()}
        if set(parts) <= words or any(_same_stem(p, w) for p in parts for w in words):
            continue
        if len(parts) == 1 and any(term in k.split() for k, _ in kept):
            continue
        if len(kept) == top_n:
            break
        kept.append((term, score))
    return kept[:top_n]


def _same_stem(a: str, b: str) -> bool:
    """Two forms of one word: "game"/"games", "religion"/"religious",
    "mathematics"/"mathematical" (a shared prefix of all but the last 3 letters, at least 5)."""
    if _singular(a) == _singular(b):
        return True
    shared = len(os.path.commonprefix([a, b]))
    return shared >= max(5, min(len(a), len(b)) - 3)


def _singular(word: str) -> str:
    """A crude singular, enough to tell "game" and "games" apart from other words."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


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
