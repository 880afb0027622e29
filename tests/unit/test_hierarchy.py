"""The cluster hierarchy: the builder (engine/hierarchy.py), its centroid summaries
(clusterer), and the labels of its topics (labeler/hierarchy_labels.py), over arrays and fakes."""
from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from contracts.api import ExecuteClusterByIdRequest, LLMLabeling
from contracts.events import CentroidSummary, ClusteringConfig
from contracts.resources import CreateClusterRequest
from services.clusterer.engine.hierarchy import build_hierarchy, level_counts
from services.clusterer.handler import with_hierarchy
from services.labeler import hierarchy_labels
from tests.support.labeler_fakes import clustered_event, corpus, make_rig, topic_words
from tests.support.llm_servers import FakeLLM

TOPIC_HINTS = topic_words()


def _blobs(groups: int, per_group: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leaf centroids in `groups` well separated directions, `per_group` leaves each."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(groups, dim)) * 10
    vectors = np.concatenate([c + rng.normal(size=(per_group, dim)) for c in centers])
    truth = np.repeat(np.arange(groups), per_group)
    order = rng.permutation(len(vectors))
    return vectors[order].astype(np.float32), rng.integers(5, 50, len(vectors)), truth[order]


def _ancestors(parent: np.ndarray, node: int) -> list[int]:
    out = []
    while parent[node] != -1:
        node = int(parent[node])
        out.append(node)
    return out


@pytest.mark.parametrize("k", [2, 3, 5, 11, 40, 120])
@pytest.mark.parametrize("max_depth", [2, 3, 5])
def test_the_tree_covers_every_cluster_and_every_parent_has_two_children_or_more(k, max_depth):
    rng = np.random.default_rng(k)
    vectors, sizes = rng.normal(size=(k, 8)), rng.integers(1, 100, k)
    tree = build_hierarchy(vectors, sizes, max_depth)
    assert tree.n_leaves == k and tree.n_parents >= 1
    assert 2 <= tree.depth <= max_depth
    for p in range(k, tree.n_nodes):
        assert len(tree.children(p)) >= 2
        assert tree.sizes[p] == sum(tree.sizes[c] for c in tree.children(p))
        members = tree.leaves_of(p)
        expected = (vectors[members] * sizes[members, None]).sum(axis=0) / sizes[members].sum()
        np.testing.assert_allclose(tree.vectors[p - k], expected, rtol=1e-5, atol=1e-5)
    for node in range(tree.n_nodes):
        assert tree.level[node] == len(_ancestors(tree.parent, node))
    assert (tree.sizes[:k] == sizes).all()
    roots = np.flatnonzero(tree.parent == -1)
    assert sum(tree.sizes[r] for r in roots) == sizes.sum()  # the top level partitions the run
    # numbered top level first, each level largest first
    parents = list(range(k, tree.n_nodes))
    assert parents == sorted(parents, key=lambda p: (tree.level[p], -tree.sizes[p], p))


def test_well_separated_groups_of_clusters_become_the_topics():
    vectors, sizes, truth = _blobs(groups=4, per_group=3)
    tree = build_hierarchy(vectors, sizes, max_depth=2)
    topics_found = [frozenset(tree.leaves_of(p)) for p in range(tree.n_leaves, tree.n_nodes)]
    expected = {frozenset(np.flatnonzero(truth == g).tolist()) for g in range(4)}
    assert set(topics_found) == expected


def test_deeper_trees_nest_and_stop_at_max_depth():
    vectors, sizes, _ = _blobs(groups=6, per_group=7)
    two, three = build_hierarchy(vectors, sizes, 2), build_hierarchy(vectors, sizes, 3)
    assert two.depth == 2 and three.depth == 3
    assert level_counts(42, 3) == [14, 5] and level_counts(42, 2) == [14]
    # the lower topics of the deeper tree are the topics of the shallower one
    def groups(tree, height):  # parents whose children are leaves only
        return {frozenset(tree.leaves_of(p)) for p in range(tree.n_leaves, tree.n_nodes)
                if all(c < tree.n_leaves for c in tree.children(p)) == (height == 1)}
    assert groups(three, 1) <= groups(two, 1) | {frozenset([i]) for i in range(42)}


def test_too_few_clusters_and_bad_input():
    one = build_hierarchy(np.ones((1, 4)), np.array([10]), 3)
    assert one.n_parents == 0 and one.depth == 1
    two = build_hierarchy(np.eye(2), np.array([3, 4]), 3)
    assert two.parent.tolist() == [2, 2, -1] and two.sizes.tolist() == [3, 4, 7]
    with pytest.raises(ValueError, match="same clusters"):
        build_hierarchy(np.ones((3, 4)), np.array([1, 2]), 3)
    with pytest.raises(ValueError, match="max_depth"):
        build_hierarchy(np.ones((3, 4)), np.array([1, 2, 3]), 0)


# --------------------------------------------------------------- the request fields

def test_the_request_fields_and_their_bounds():
    assert CreateClusterRequest(collection_ids=["c"], cluster_name="n").max_hierarchy_depth == 3
    assert ExecuteClusterByIdRequest(hierarchical=True, max_hierarchy_depth=5).max_hierarchy_depth == 5
    for bad in (1, 6):
        with pytest.raises(ValidationError, match="max_hierarchy_depth"):
            ExecuteClusterByIdRequest(max_hierarchy_depth=bad)
        with pytest.raises(ValidationError, match="max_hierarchy_depth"):
            CreateClusterRequest(collection_ids=["c"], cluster_name="n", max_hierarchy_depth=bad)
    auto = ClusteringConfig(clustering_method="auto", embedding_name="e")
    assert auto.builds_hierarchy  # auto's topics come with it, whatever `hierarchical` says
    assert not ClusteringConfig(clustering_method="kmeans", embedding_name="e").builds_hierarchy
    assert ClusteringConfig(clustering_method="kmeans", embedding_name="e", hierarchical=True).builds_hierarchy
    assert not ClusteringConfig(mode="assign", clustering_method="auto", embedding_name="e").builds_hierarchy


# ---------------------------------------------------------- the clusterer's summaries

def test_centroid_summaries_keep_the_clusters_and_add_the_topics_after_them():
    vectors, sizes, _ = _blobs(groups=3, per_group=3)
    leaves = [CentroidSummary(group_id=f"cl_{i}", num_members=int(n), stable_id=f"sc_{i:012x}")
              for i, n in enumerate(sizes)]
    out = with_hierarchy(leaves, vectors, 3)
    by_id = {c.group_id: c for c in out}
    assert [c.group_id for c in out[:9]] == [f"cl_{i}" for i in range(9)]
    assert all(c.stable_id == f"sc_{i:012x}" for i, c in enumerate(out[:9]))  # lineage untouched
    topics_ = out[9:]
    assert topics_ and all(re.fullmatch(r"cl_\d+", t.group_id) and int(t.group_id[3:]) >= 9 for t in topics_)
    assert all(t.stable_id is None and len(t.child_group_ids) >= 2 for t in topics_)
    for c in out:
        for child in c.child_group_ids:
            assert by_id[child].parent_group_id == c.group_id
            assert by_id[child].hierarchy_level == c.hierarchy_level + 1
    assert {c.hierarchy_level for c in out if c.parent_group_id is None} == {0}
    assert sum(c.num_members for c in out if c.parent_group_id is None) == int(sizes.sum())


# ------------------------------------------------------------------ topic labels

def _split_corpus(per_topic: int = 40):
    """The labeler's four-topic corpus, each topic cut in two clusters (8 leaves) under
    one topic each (cl_8..cl_11): the hierarchy the clusterer would send."""
    c = corpus(per_topic=per_topic)
    topic_index = {f"cl_{t}": t for t in range(4)}
    members = c.members.with_row_index("i").with_columns(
        pl.format("cl_{}", pl.col("cluster_id").replace_strict(topic_index, return_dtype=pl.Int64) * 2
                  + pl.col("i") % 2).alias("cluster_id")).drop("i")
    sizes = dict(members.group_by("cluster_id").len().iter_rows())
    centroids = []
    for t in range(4):
        kids = [f"cl_{2 * t}", f"cl_{2 * t + 1}"]
        centroids += [CentroidSummary(group_id=k, num_members=sizes[k], parent_group_id=f"cl_{8 + t}",
                                      hierarchy_level=1) for k in kids]
        centroids.append(CentroidSummary(group_id=f"cl_{8 + t}", num_members=sizes[kids[0]] + sizes[kids[1]],
                                         child_group_ids=kids, hierarchy_level=0))
    theme = {f"cl_{8 + t}": c.topic_of[f"cl_{t}"] for t in range(4)}
    return c, members, centroids, theme


def _check_topic_labels(labels: dict, centroids: list[CentroidSummary], theme: dict[str, str]) -> None:
    words = lambda s: set(re.findall(r"[a-z]+", s.casefold()))  # noqa: E731
    assert set(labels) == {c.group_id for c in centroids}, "every level is labelled"
    assert len({l.label.casefold() for l in labels.values()}) == len(labels), "labels are distinct"
    for c in centroids:
        if not c.child_group_ids:
            continue
        topic, children = labels[c.group_id], [labels[k] for k in c.child_group_ids]
        assert len({k.label for k in children}) == len(children), "siblings share no label"
        assert words(topic.label) & TOPIC_HINTS[theme[c.group_id]], (theme[c.group_id], topic.label)
        joined = {", ".join(k.keywords[:n]) for k in children for n in (1, 2, 3)}
        assert topic.label.casefold() not in {j.casefold() for j in joined}
        assert topic.label not in {k.label for k in children}
        assert not words(topic.label) <= set().union(*(words(k.label) for k in children)), \
            f"{topic.label!r} is its subtopics' words: {[k.label for k in children]}"


async def test_every_topic_gets_a_keyword_label_that_names_it_and_not_its_subtopics():
    c, members, centroids, theme = _split_corpus()
    rig = make_rig(c, FakeLLM())
    rig.results._members = members
    event = clustered_event(members).model_copy(update={"centroids": centroids})
    await rig.labeler.handle(event)
    labels = {l.group_id: l for l in rig.labeled().labels}
    _check_topic_labels(labels, centroids, theme)
    for t in theme:
        assert labels[t].metadata["labeling"]["source"] == "ctfidf" and labels[t].keywords
        assert labels[t].summary.startswith("subtopics: ")


async def test_with_llm_labeling_topics_are_named_by_the_llm_shown_their_subtopics():
    c, members, centroids, theme = _split_corpus()
    fake = FakeLLM()
    rig = make_rig(c, fake)
    rig.results._members = members
    config = LLMLabeling(enabled=True, model_name="gpt-4o-mini-2024-07-18")
    event = clustered_event(members, llm_labeling=config).model_copy(update={"centroids": centroids})
    await rig.labeler.handle(event)
    labels = {l.group_id: l for l in rig.labeled().labels}
    assert all(labels[t].metadata["labeling"]["source"] == "llm" for t in theme)
    topic_prompts = [r.prompt for r in fake.requests if "A topic over these named subtopics" in r.prompt]
    assert topic_prompts and all(f"### Cluster {t} " in topic_prompts[-1] for t in theme)
    for t in theme:
        kids = [labels[k].label for k in centroids[[x.group_id for x in centroids].index(t)].child_group_ids]
        assert all(k in topic_prompts[-1] for k in kids)
    assert len({l.label.casefold() for l in labels.values()}) == len(labels)


def test_the_tree_read_back_from_centroids():
    _, _, centroids, _ = _split_corpus(per_topic=4)
    tree = hierarchy_labels.Tree.from_centroids([*centroids, CentroidSummary(group_id="cl_-1", num_members=3)])
    assert tree.depths == [0] and sorted(tree.children) == ["cl_10", "cl_11", "cl_8", "cl_9"]
    assert tree.leaves_of("cl_9") == ["cl_2", "cl_3"] and tree.leaves_of("cl_2") == ["cl_2"]
    assert "cl_-1" not in tree.level
