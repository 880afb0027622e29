"""Keyword labels for a run's topics (the parents of its cluster hierarchy); no I/O.

A topic's members are its descendant clusters' members (the labeler reads the pooled
members nearest each cluster's centroid, so a topic's texts are its clusters' pools).
Its keywords are c-TF-IDF terms (ctfidf.py) computed among the nodes of its own level
(the topics and clusters at the same depth from the top), so that a topic is told
apart from the other topics of its granularity and not from its own subtopics. Then
two rules keep it a *topic* name rather than a list of its subtopics:

- a term's c-TF-IDF score is weighted by its coverage, the share of the topic's
  children whose texts hold it: a word of one subtopic only sinks, a word the
  subtopics share rises;
- terms already in a child's label go after the others, so the label is not the
  children's keywords joined together.

Labels are made unique over the whole run (the clusters' labels are taken first), so
no two children of one topic, nor a topic and a subtopic, share a name.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from contracts.api import NOISE_GROUP_ID as NOISE
from contracts.events import CentroidSummary
from services.labeler import ctfidf


@dataclass
class Tree:
    """A run's hierarchy as its centroids describe it (topics have child_group_ids)."""

    children: dict[str, list[str]] = field(default_factory=dict)  # topic -> its children
    level: dict[str, int] = field(default_factory=dict)  # every node -> depth from the top

    @classmethod
    def from_centroids(cls, centroids: Iterable[CentroidSummary]) -> Tree:
        tree = cls()
        for c in centroids:
            if c.group_id == NOISE or c.hierarchy_level is None:
                continue
            tree.level[c.group_id] = c.hierarchy_level
            if c.child_group_ids:
                tree.children[c.group_id] = list(c.child_group_ids)
        return tree

    @property
    def depths(self) -> list[int]:
        """The depths that hold topics, deepest first: a topic's children are labelled before it."""
        return sorted({self.level[t] for t in self.children}, reverse=True)

    def leaves_of(self, node: str) -> list[str]:
        if node not in self.children:
            return [node]
        return [leaf for child in self.children[node] for leaf in self.leaves_of(child)]


def texts_of(tree: Tree, node: str, texts_by_cluster: Mapping[str, Sequence[str]]) -> list[str]:
    return [t for leaf in tree.leaves_of(node) for t in texts_by_cluster.get(leaf, ())]


def topic_keywords(tree: Tree, texts_by_cluster: Mapping[str, Sequence[str]], labels: Mapping[str, str],
                   depth: int, top_n: int = 10) -> dict[str, ctfidf.Keywords]:
    """The keywords of each topic at ``depth``: c-TF-IDF among the nodes of that depth,
    weighted by coverage of the topic's children, terms of its children's ``labels`` last."""
    out: dict[str, ctfidf.Keywords] = {}
    nodes = [n for n, lv in tree.level.items() if lv == depth]
    scored = ctfidf.class_tfidf({n: texts_of(tree, n, texts_by_cluster) for n in nodes}, top_n * 3)
    for topic in (n for n in nodes if n in tree.children):
        children = tree.children[topic]
        present = [{term for text in texts_of(tree, c, texts_by_cluster) for term in ctfidf.analyze(text)}
                   for c in children]
        named = {w for c in children for w in _words(labels.get(c, ""))}
        ranked = sorted(
            zip(scored[topic].terms, scored[topic].scores),
            key=lambda ts: (bool(set(ts[0].split()) & named),
                            -ts[1] * sum(ts[0] in p for p in present) / max(len(present), 1)))
        out[topic] = ctfidf.Keywords([t for t, _ in ranked[:top_n]], [s for _, s in ranked[:top_n]])
    return out


def topic_labels(keywords: Mapping[str, ctfidf.Keywords], taken: Iterable[str]) -> dict[str, str]:
    """A label per topic of ``keywords`` (largest first), unique among ``taken`` and each other."""
    candidates = {t: ctfidf.label_from_keywords(k.terms) or f"Topic {t.removeprefix('cl_')}"
                  for t, k in keywords.items()}
    return ctfidf.unique_labels(candidates, {t: k.terms for t, k in keywords.items()}, set(taken))


def _words(label: str) -> set[str]:
    return {w for w in label.casefold().replace(",", " ").replace("(", " ").replace(")", " ").split()}
