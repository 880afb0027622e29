"""Run one clustering method over an embedding matrix.

``run_clustering(X, method, params, seed)`` is the only entry point the service needs.
It validates the parameters (``params.validate_params``), refuses inputs the method cannot
handle (too few points, more than the method's sampling cap, n_clusters > n), runs the
estimator and returns a ``ClusteringOutcome`` whose labels are renumbered 0..k-1 by
cluster size (largest first), with -1 for noise.

Two seeds, two jobs:
  * ``params.random_state`` (default 42, from the reference) is the estimator's own
    random_state, so a user can ask for a different restart of the same algorithm;
  * ``seed`` drives what the engine itself draws: sub-samples (auto-k, MiniBatch seeding,
    bandwidth estimation) and the PCA/UMAP reduction in front of HDBSCAN.
Same input, same params and same seed give the same labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel
from sklearn.cluster import (
    DBSCAN,
    OPTICS,
    AgglomerativeClustering,
    KMeans,
    MeanShift,
    MiniBatchKMeans,
    SpectralClustering,
    estimate_bandwidth,
)
from scipy.cluster import hierarchy
from sklearn.decomposition import PCA
from sklearn.manifold import spectral_embedding
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors, kneighbors_graph

from .graph import knn, leiden, local_scaling_weights, similarity_weights
from .layout import umap_embedding
from .results import NOISE, compute_centroids, nearest_centroid
from contracts.engine_params import (
    AgglomerativeParams,
    AutoParams,
    ClusteringMethod,
    DBSCANParams,
    EVoCParams,
    GaussianMixtureParams,
    HDBSCANParams,
    KMeansParams,
    LeidenParams,
    MeanShiftParams,
    OPTICSParams,
    SpectralParams,
    cap_for,
    parse_method,
    resolved_max_eps,
    resolved_min_samples,
    validate_params,
)

__all__ = [
    "AutoKSearch",
    "ClusteringOutcome",
    "KMEANS_EXACT_MAX_POINTS",
    "relabel_by_size",
    "run_clustering",
]


# --- KMeans vs MiniBatchKMeans ---------------------------------------------------------
# Exact KMeans up to this many points, MiniBatchKMeans above: up to 20k exact KMeans costs
# a few seconds and is the reference answer; above it MiniBatch is 4-15x faster at the
# same ARI, and 1M points stay well under a minute. Figures and how to re-measure them:
# docs/engine-measurements.md.
KMEANS_EXACT_MAX_POINTS = 20_000
# Plain MiniBatchKMeans merged two of 8 blobs for most seeds: its n_init only re-draws the
# starting centres, then a single noisy descent runs. Starting it from the centres of an
# exact KMeans(n_init) on a seeded sample fixes that for ~0.5 s.
MINIBATCH_SEED_SAMPLE = 10_000
MINIBATCH_BATCH_SIZE = 4096

# --- HDBSCAN in high dimensions ---------------------------------------------------------
# HDBSCAN's trees stop pruning in high dimensions (raw 384-d is quadratic: minutes at
# 20k). So: PCA to 50 (cheap, deterministic, drops the noise dimensions UMAP would
# otherwise pay for in its neighbour search), then UMAP to 10 with min_dist=0 (packs
# clusters tightly, the usual set-up for density clustering), then HDBSCAN. The
# alternatives measured: docs/engine-measurements.md.
HDBSCAN_REDUCE_ABOVE_DIMS = 50
HDBSCAN_PCA_DIMS = 50
HDBSCAN_UMAP_DIMS = 10
HDBSCAN_UMAP_NEIGHBORS = 15
# UMAP's own default is 500 epochs below 10k points and 200 above; 200 everywhere is
# enough to separate clusters and cut 15-20 % off a 2k-point reduction (the layout keeps
# UMAP's default, which looks better on screen).
HDBSCAN_UMAP_EPOCHS = 200
# Below this many points UMAP's neighbour graph means little; PCA alone is used.
HDBSCAN_UMAP_MIN_POINTS = 100
# From this many points the reduction takes a faster route (issue 14: at the 50k cap
# UMAP's spectral initialisation dominated): the kNN graph of the PCA(50) points is built
# once (pynndescent, as UMAP would) and handed to UMAP, which starts from PCA coordinates
# and runs a few epochs. UMAP's epochs cost ~0.26 s each at 50k on this box (single
# thread: a seeded UMAP does not run in parallel), so 10 epochs, not 50; and 5
# dimensions (BERTopic's), where HDBSCAN's kd-tree prunes better than in 10. On the
# quality sets forced through this route, ARI at the reference's min_cluster_size 5 rose
# on all four sets (the PCA start, less refined, splits clusters less), at 25 it fell on
# two; the old route stays below this size, where nothing changes (figures:
# docs/engine-measurements.md).
HDBSCAN_FAST_MIN_POINTS = 10_000
HDBSCAN_FAST_UMAP_DIMS = 5
HDBSCAN_FAST_UMAP_EPOCHS = 10

# --- "auto" number of clusters ---------------------------------------------------------
AUTO_K_MAX = 20
AUTO_K_SAMPLE = 3_000  # up to 19 fits of the method on the sample
AGREEMENT = "agreement with kNN + Leiden"
AUTO_K_NEIGHBORS = 15  # the search's graph: 15 cosine neighbours, weights 1 - distance
# kmeans with n_clusters "auto" starts Lloyd's iterations from the kNN + Leiden
# communities the search compared against (AUTO_RESTARTS seeded partitions of its sample,
# each merged or split to k), not from k-means++, and keeps the start of lowest inertia.
# k-means++ spreads its seeds by distance, so in 384-d text embeddings it splits large
# topics and joins small ones; a start inside the graph's communities moves only locally.
# On bench/quality.py's four sets, at the k the search chose, ARI rose on every set (wiki7
# 0.575 -> 0.632, wiki11 0.386 -> 0.399, debian 0.530 -> 0.546, digits 0.721 -> 0.747) for
# an inertia 0.0-1.5 % above k-means++'s best of 10 (docs/engine-measurements.md). Only
# the "auto" path does this, and not when the user names an init: a named k keeps the
# reference's k-means++.
KMEANS_AUTO_INIT = "kNN + Leiden communities"

# DBSCAN keeps every eps-neighbourhood in memory (int64 indices). Refuse runs whose
# estimated neighbour pairs exceed this (~2 GB) instead of being OOM-killed mid-run.
DBSCAN_MAX_NEIGHBOR_PAIRS = 250_000_000
_DBSCAN_PROBE_POINTS = 512

MEAN_SHIFT_BANDWIDTH_SAMPLE = 2_000

# --- "auto": the default method --------------------------------------------------------
# A kNN graph (20 neighbours by cosine once the vectors' mean is subtracted, locally scaled
# weights), Leiden (RBConfiguration, resolution 1, iterated until stable), best of a few
# seeded restarts by the objective; communities below a size that grows with n are merged
# into their nearest cluster, so auto leaves no noise. Chosen by bench/quality.py (see
# docs/algorithms.md): on every labelled set it beat KMeans given the true k, BERTopic's
# UMAP + HDBSCAN, EVoC and the plain kNN + Leiden (15 neighbours, weights 1 - distance),
# with no k and no noise, in about a second on 3K documents.
# Why this graph (issue 14; it was the plain one): sentence embeddings share a common
# direction, so raw cosine ranks neighbours partly by it, and subtracting the mean
# removes it; local scaling (each point's scale its distance to its 7th neighbour,
# graph.local_scaling_weights) lets a sparse topic hold together as well as a dense one;
# 20 neighbours then keep a topic whole where 15 split it. Over ten seed triples, ARI
# rose on every set (means: wiki7 0.585 -> 0.652, wiki11 0.401 -> 0.424, debian 0.598 ->
# 0.615, digits 0.890 -> 0.893); each change alone helped some sets and hurt others
# (docs/engine-measurements.md has the grid).
# Above AUTO_CLUSTER_SAMPLE points it clusters a seeded sample and assigns the rest to the
# nearest centroid (cosine), which keeps 1M points within seconds. The sample is 12K:
# kNN + three Leiden restarts on this graph took 11-12 s of CPU at 50K with a 20K sample,
# above issue 14's 10 s, and 6.3 s with 12K (docs/engine-measurements.md); every
# labelled set in bench/quality.py is below it, and 12K points still give each of auto's
# clusters (>= 1 % of the sample) at least 120 members to place the rest by.
# bench/speed.py measures it.
# The smallest cluster auto keeps is 1 % of the points (it was 0.5 %, issue 14): the
# communities between 0.5 and 1 % on the labelled sets were fragments, not topics (on
# debian 21 near-identical one-line descriptions of one package family's modules),
# whose keyword labels name the family and not what it is for; merged into their
# nearest cluster by centroid cosine, every set's ARI stayed at or above its best anchor
# and debian's label share rose from 77 to 82 %. At most 100 clusters follow from it;
# the hierarchy's topics sit above them.
AUTO_NEIGHBORS = 20
AUTO_SCALE_NEIGHBOR = 7  # local scaling: each point's distance to its 7th neighbour (graph.local_scaling_weights)
# Below 8 dimensions auto keeps the plain graph: there a neighbour's distance grows fast
# with its rank, local scaling's kernel cuts a compact cluster apart (five 4-d blobs
# became 10 clusters, ARI 0.631 where the plain graph gave 5 and 0.971; 2-d: 26 clusters),
# and centring moves the angles cosine sees. From 8 dimensions both gave ARI 1.0 on blobs.
AUTO_LOCAL_SCALING_MIN_DIMS = 8
AUTO_RESOLUTION = 1.0
AUTO_RESTARTS = 3
AUTO_CLUSTER_SAMPLE = 12_000
AUTO_MIN_CLUSTER_SHARE = 0.01  # communities under 1 % of the points (and under 5) are merged
AUTO_MIN_CLUSTER_SIZE = 5


@dataclass(frozen=True)
class AutoKSearch:
    """How ``"auto"`` was resolved: the criterion, its value for each k tried, the pick."""

    criterion: str  # AGREEMENT (ARI, higher is better) or "bic" (lower is better)
    scores: dict[int, float]
    chosen: int
    sample_size: int
    # AGREEMENT only: the sample's rows and the Leiden partitions of it (the first is the
    # one the scores compare against), for a method that starts from them (kmeans).
    sample_rows: np.ndarray | None = field(default=None, repr=False, compare=False)
    communities: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)  # seed -> labels
    # What the final fit started from, when not the method's own init (kmeans' seeding).
    init: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ClusteringOutcome:
    labels: np.ndarray  # int32, shape (n,); clusters 0..k-1 by size descending, -1 noise
    n_clusters: int  # noise excluded
    noise_count: int
    estimator: str  # the concrete estimator, e.g. "MiniBatchKMeans"
    reduction: str | None  # e.g. "PCA(384->50)+UMAP(50->10)", None when X was used as is
    params: dict[str, Any]  # the parameters actually used ("auto" and None defaults resolved)
    seconds: float
    auto_k: AutoKSearch | None = field(default=None)
    # True for members that did not earn their place by the method itself (a merged small
    # community, a point outside auto's sample, reassigned noise): "assigned, not core".
    assigned: np.ndarray | None = field(default=None)
    # What auto chose and why (the criterion and its scores); None for the named methods.
    choice: dict[str, Any] | None = field(default=None)

    def explanation(self) -> dict[str, Any] | None:
        """What the engine chose on the user's behalf and why, as JSON-ready data: auto's
        pipeline and criterion, or an ``"auto"`` cluster count's search; None otherwise."""
        if self.choice is not None:
            return self.choice
        if self.auto_k is not None:
            search = self.auto_k
            better = "higher" if search.criterion == AGREEMENT else "lower"
            out = {"chose": f"{search.chosen} clusters", "criterion": f"{search.criterion} ({better} is better)",
                   "scores": {str(k): round(v, 4) for k, v in search.scores.items()},
                   "sample_size": search.sample_size}
            if search.init is not None:
                out["init"] = search.init
            return out
        return None


def run_clustering(
    X: np.ndarray,
    method: str | ClusteringMethod,
    params: dict[str, Any] | BaseModel | None = None,
    seed: int = 42,
    *,
    n_jobs: int | None = None,
    preprocessing: list[Any] | None = None,
) -> ClusteringOutcome:
    """Cluster the rows of ``X`` (n x d, cast to float32) with ``method``.

    ``"auto"`` for n_clusters / n_components picks k in 2..min(20, n-1) by the best
    agreement (ARI) with a kNN + Leiden partition of a seeded sample of at most 3,000
    points (kmeans, spectral, agglomerative), or k in 1..min(20, n-1) by the lowest BIC on that sample
    (gaussian_mixture, whose likelihood makes a single component a fair answer); the final
    model is then fitted on all points with the chosen k.

    Raises ValueError for requests that cannot run: fewer than 2 points, non-finite
    values, more points than ``cap_for(method)``, n_clusters larger than the number of
    points, and the like.

    ``preprocessing`` (``preprocessing_steps``: whitening, umap, none, in order; see
    ``engine.preprocessing``) transforms the points the method clusters and replaces the
    engine's own reduction (hdbscan's PCA + UMAP); noise placement and everything after
    the labels use the original vectors.

    ``n_jobs`` (sklearn's meaning: None is one job) goes to DBSCAN, MeanShift, spectral's
    neighbour graph and HDBSCAN's core distances. It is not a default of -1 because
    joblib's start-up costs seconds per call (MeanShift on 300 points: 0.4 s with None,
    4.1 s with -1); KMeans, GaussianMixture and PCA use every core through BLAS/OpenMP
    whatever it says.
    """
    started = time.perf_counter()
    method = parse_method(method)
    p = validate_params(method, params)
    X = _as_matrix(X)
    cap = cap_for(method, p)
    if len(X) > cap:
        raise ValueError(
            f"{method.value} clusters at most {cap:,} points per run (got {len(X):,}); "
            f"set sample_size <= {cap:,}"
        )
    run = _RUNNERS[method]
    if preprocessing:
        from .preprocessing import preprocess

        Z, steps = preprocess(X, preprocessing)
        fitted = run(Z, p, seed, n_jobs, reduce=False) if method is ClusteringMethod.HDBSCAN else run(Z, p, seed, n_jobs)
        fitted = replace(fitted, reduction=steps + (f"+{fitted.reduction}" if fitted.reduction else ""))
    else:
        fitted = run(X, p, seed, n_jobs)
    assigned = fitted.assigned
    policy = getattr(p, "noise_policy", "keep")
    if policy != "keep":
        raw, placed = apply_noise_policy(X, fitted.labels, policy, p.max_noise_share)
        assigned = placed if assigned is None else assigned | placed
        fitted = replace(fitted, labels=raw)
        if fitted.choice is not None:
            fitted.choice["noise_policy"] = policy
            fitted.choice["noise_assigned"] = int(placed.sum())
    labels = relabel_by_size(fitted.labels)
    return ClusteringOutcome(
        labels=labels,
        n_clusters=int(labels.max()) + 1,  # labels are 0..k-1 or -1, so all-noise gives 0
        noise_count=int(np.count_nonzero(labels == NOISE)),
        estimator=fitted.estimator,
        reduction=fitted.reduction,
        params=fitted.params,
        seconds=time.perf_counter() - started,
        auto_k=fitted.auto_k,
        assigned=assigned,
        choice=fitted.choice,
    )


def apply_noise_policy(
    X: np.ndarray, labels: np.ndarray, policy: str, max_noise_share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Place noise points (label < 0) in their nearest cluster by centroid cosine:
    every one (``"assign"``), or the ones nearest a cluster until at most
    ``max_noise_share`` of all points is noise (``"cap"``); ``"keep"`` changes nothing.
    Returns (labels, assigned) where ``assigned`` marks the points placed here."""
    if policy not in ("keep", "assign", "cap"):
        raise ValueError(f'noise_policy must be one of "keep", "assign", "cap" (got {policy!r})')
    labels = np.asarray(labels, dtype=np.int64).copy()
    assigned = np.zeros(len(labels), dtype=bool)
    noise = labels < 0
    if policy == "keep" or not noise.any() or noise.all():
        return labels, assigned
    ids = np.unique(labels[~noise])
    centres = compute_centroids(X[~noise], np.searchsorted(ids, labels[~noise])).vectors
    todo = np.flatnonzero(noise)
    nearest, similarity = nearest_centroid(X[todo], centres)
    if policy == "cap":
        allowed = int(np.floor(max_noise_share * len(labels)))
        closest = np.argsort(-similarity, kind="stable")[: max(0, len(todo) - allowed)]
        todo, nearest = todo[closest], nearest[closest]
    labels[todo] = ids[nearest]
    assigned[todo] = True
    return labels, assigned


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1, largest first; ties go to the cluster whose first member
    comes first. Noise (any negative label) becomes -1. Returns int32."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    out = np.full(labels.shape, NOISE, dtype=np.int32)
    clustered = labels >= 0
    if not clustered.any():
        return out
    ids, first, counts = np.unique(labels[clustered], return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new_id = np.empty(len(ids), dtype=np.int32)
    new_id[order] = np.arange(len(ids), dtype=np.int32)
    out[clustered] = new_id[np.searchsorted(ids, labels[clustered])]
    return out


# --- internals ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fitted:
    labels: np.ndarray
    estimator: str
    params: dict[str, Any]
    reduction: str | None = None
    auto_k: AutoKSearch | None = None
    assigned: np.ndarray | None = None
    choice: dict[str, Any] | None = None


def _as_matrix(X: Any) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (points x dimensions), got shape {X.shape}")
    n, d = X.shape
    if n < 2:
        raise ValueError(f"clustering needs at least 2 points (got {n})")
    if d < 1:
        raise ValueError("embeddings have no dimensions")
    # In row blocks: a whole-matrix isfinite() would allocate n x d bools (384 MB at 1M x 384).
    bad = sum(int(np.count_nonzero(~np.isfinite(X[i : i + 65_536]).all(axis=1))) for i in range(0, n, 65_536))
    if bad:
        raise ValueError(f"{bad} embedding(s) contain NaN or infinite values; drop or fix them first")
    return X


def _require_k_at_most_n(k: int, n: int, name: str = "n_clusters") -> None:
    if k > n:
        raise ValueError(f"algorithm_params.{name} ({k}) exceeds the number of points ({n}); lower it")


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample without replacement (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


# Given the sample, return "k -> labels" (so per-sample work such as a distance matrix,
# a linkage tree or a spectral embedding is done once for all k).
_Labeller = Callable[[np.ndarray], Callable[[int], np.ndarray]]


def _choose_k(
    X: np.ndarray,
    seed: int,
    *,
    labeller: _Labeller | None = None,
    bic: Callable[[np.ndarray, int], float] | None = None,
    restarts: int = 1,
) -> AutoKSearch:
    """Agreement with a kNN + Leiden partition of the sample (ARI, highest wins; ties to
    the smaller k) over k = 2..min(20, m-1) when ``labeller`` is given, else BIC (lowest
    wins) over k = 1..min(20, m-1).

    Why agreement and not silhouette: on bench/quality.py's labelled sets silhouette chose
    17-19 clusters where there were 7-12, and KMeans' ARI fell below KMeans given the true
    k; Leiden finds the graph's communities without a k (auto's own pipeline), and the k
    whose partition agrees with them best was at or above the true k's ARI on every set.

    ``restarts`` Leiden partitions of the sample (seeds seed, seed + 1, ...) are kept in
    the result for a method that starts from them; the scores compare against the first."""
    rows = _sample_rows(len(X), AUTO_K_SAMPLE, seed)
    sample = X[rows]
    m = len(sample)
    criterion = AGREEMENT if labeller is not None else "bic"
    low = 2 if labeller is not None else 1
    high = min(AUTO_K_MAX, m - 1)
    if high < low:
        raise ValueError(f'"auto" needs at least {low + 1} points to compare cluster counts (got {m})')
    scores: dict[int, float] = {}
    communities: dict[int, np.ndarray] = {}
    if labeller is None:
        assert bic is not None
        for k in range(low, high + 1):
            scores[k] = float(bic(sample, k))
        chosen = min(scores, key=lambda k: (scores[k], k))
    else:
        labels_for = labeller(sample)
        # The plain graph, not auto's: with auto's the search chose 10 clusters for
        # debian's 12 sections, and KMeans fell below the true k's ARI.
        idx, weights, _ = plain_graph(sample, seed)
        for i in range(max(1, restarts)):
            communities[seed + i] = leiden(idx, weights, resolution=AUTO_RESOLUTION, n_iterations=-1,
                                           seed=seed + i).labels
        for k in range(low, high + 1):
            scores[k] = float(adjusted_rand_score(communities[seed], labels_for(k)))
        chosen = max(scores, key=lambda k: (scores[k], -k))
    return AutoKSearch(criterion=criterion, scores=scores, chosen=chosen, sample_size=m,
                       sample_rows=rows if communities else None, communities=communities)


def communities_to_k(S: np.ndarray, communities: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Exactly ``k`` groups of the rows of ``S`` from a partition of them: while there are
    more, the smallest group joins the one whose centroid is nearest its own (cosine);
    while there are fewer, the largest is split in two by KMeans. Returns labels 0..k-1."""
    if not 1 <= k <= len(S):
        raise ValueError(f"k ({k}) must be between 1 and the number of points ({len(S)})")
    labels = np.unique(communities, return_inverse=True)[1].astype(np.int64)
    sums = np.zeros((labels.max() + 1, S.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, S)
    sizes = np.bincount(labels).astype(np.int64)
    alive = np.ones(len(sizes), dtype=bool)
    while alive.sum() > k:
        ids = np.flatnonzero(alive)
        small = ids[np.argmin(sizes[ids])]
        centres = sums[ids] / np.linalg.norm(sums[ids], axis=1, keepdims=True).clip(1e-12)
        similarity = centres @ centres[np.searchsorted(ids, small)]
        similarity[np.searchsorted(ids, small)] = -np.inf
        into = ids[int(np.argmax(similarity))]
        labels[labels == small] = into
        sums[into] += sums[small]
        sizes[into] += sizes[small]
        alive[small] = False
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    while labels.max() + 1 < k:
        largest = np.bincount(labels).argmax()
        members = np.flatnonzero(labels == largest)
        halves = KMeans(n_clusters=2, n_init=3, random_state=seed).fit_predict(S[members])
        labels[members[halves == 1]] = labels.max() + 1
    return labels


def _resolve_k(
    X: np.ndarray, requested: int | str, seed: int, name: str = "n_clusters", **search: Any
) -> tuple[int, AutoKSearch | None]:
    if requested == "auto":
        found = _choose_k(X, seed, **search)
        return found.chosen, found
    _require_k_at_most_n(int(requested), len(X), name)
    return int(requested), None


def _run_kmeans(X: np.ndarray, p: KMeansParams, seed: int, n_jobs: int | None) -> _Fitted:
    def kmeans(k: int, n_init: int) -> KMeans:
        return KMeans(
            n_clusters=k, init=p.init, n_init=n_init, max_iter=p.max_iter, tol=p.tol,
            random_state=p.random_state,
        )

    # The k search fits 19 models; 3 restarts each is plenty on a 3k sample.
    k, search = _resolve_k(
        X, p.n_clusters, seed, labeller=lambda S: lambda k: kmeans(k, min(p.n_init, 3)).fit(S).labels_,
        restarts=AUTO_RESTARTS,
    )
    resolved = p.model_dump() | {"n_clusters": k}
    exact = len(X) <= KMEANS_EXACT_MAX_POINTS
    F = X if exact else X[_sample_rows(len(X), max(MINIBATCH_SEED_SAMPLE, 20 * k), seed)]
    if search is not None and "init" not in p.model_fields_set:
        model, search = _kmeans_from_communities(X, F, k, search, p)
    else:
        model = kmeans(k, p.n_init).fit(F)
    if exact:
        return _Fitted(model.labels_, "KMeans", resolved, auto_k=search)
    centres = model.cluster_centers_
    model = MiniBatchKMeans(
        n_clusters=k, init=centres, n_init=1, max_iter=p.max_iter, batch_size=MINIBATCH_BATCH_SIZE,
        random_state=p.random_state,
    ).fit(X)
    return _Fitted(model.labels_, "MiniBatchKMeans", resolved, auto_k=search)


def _kmeans_from_communities(
    X: np.ndarray, F: np.ndarray, k: int, search: AutoKSearch, p: KMeansParams
) -> tuple[KMeans, AutoKSearch]:
    """KMeans on ``F`` (X or a sample of it) started from each of the search's Leiden
    partitions of its sample of X, brought to k groups; the fit of lowest inertia wins
    (see KMEANS_AUTO_INIT). Returns it and the search with what it started from."""
    assert search.sample_rows is not None and search.communities
    S = X[search.sample_rows]
    fits = {}
    for leiden_seed, communities in search.communities.items():
        starts = compute_centroids(S, communities_to_k(S, communities, k, p.random_state)).vectors
        fits[leiden_seed] = KMeans(n_clusters=k, init=starts, n_init=1, max_iter=p.max_iter, tol=p.tol,
                                   random_state=p.random_state).fit(F)
    best = min(fits, key=lambda s: (fits[s].inertia_, s))
    init = {
        "from": f"the centroids of {KMEANS_AUTO_INIT} of the sample (one partition per Leiden seed), "
                f"each brought to {k} groups",
        "criterion": "KMeans inertia after the fit (lower is better)",
        "scores": {str(s): round(float(f.inertia_), 4) for s, f in fits.items()},
        "chosen_seed": best,
    }
    return fits[best], replace(search, init=init)


def _run_dbscan(X: np.ndarray, p: DBSCANParams, seed: int, n_jobs: int | None) -> _Fitted:
    _guard_dbscan_neighbourhoods(X, p, seed)
    labels = DBSCAN(eps=p.eps, min_samples=p.min_samples, metric=p.metric, n_jobs=n_jobs).fit_predict(X)
    return _Fitted(labels, "DBSCAN", p.model_dump())


def _guard_dbscan_neighbourhoods(X: np.ndarray, p: DBSCANParams, seed: int) -> None:
    probe = X[_sample_rows(len(X), _DBSCAN_PROBE_POINTS, seed)]
    index = NearestNeighbors(radius=p.eps, metric=p.metric).fit(X)
    counts = np.array([len(ix) for ix in index.radius_neighbors(probe, return_distance=False)])
    pairs = float(counts.mean()) * len(X)
    if pairs > DBSCAN_MAX_NEIGHBOR_PAIRS:
        share = counts.mean() / len(X)
        raise ValueError(
            f"algorithm_params.eps={p.eps} is too large for {len(X):,} points: each point has "
            f"~{share:.0%} of the data within eps, so DBSCAN would hold ~{pairs:.2g} neighbour pairs "
            f"(~{pairs * 8 / 2**30:.0f} GB); lower eps or sample fewer points"
        )


def _run_hdbscan(X: np.ndarray, p: HDBSCANParams, seed: int, n_jobs: int | None, reduce: bool = True) -> _Fitted:
    import hdbscan  # a heavy import, needed only here

    if p.min_cluster_size > len(X):
        raise ValueError(
            f"algorithm_params.min_cluster_size ({p.min_cluster_size}) exceeds the number of points "
            f"({len(X)}); lower it"
        )
    Z, reduction = _reduce_for_density(X, seed) if reduce else (X, None)
    model = hdbscan.HDBSCAN(
        min_cluster_size=p.min_cluster_size,
        min_samples=min(resolved_min_samples(p), len(X) - 1),  # the package fails at >= n
        cluster_selection_epsilon=p.cluster_selection_epsilon,
        max_cluster_size=p.max_cluster_size or 0,  # the package's "no limit" is 0
        cluster_selection_method=p.cluster_selection_method,
        allow_single_cluster=p.allow_single_cluster,
        core_dist_n_jobs=n_jobs if n_jobs is not None else 1,  # the package's default is 4
    )
    labels = model.fit_predict(Z)
    resolved = p.model_dump() | {"min_samples": resolved_min_samples(p)}
    return _Fitted(labels, "HDBSCAN", resolved, reduction=reduction)


def _reduce_for_density(X: np.ndarray, seed: int) -> tuple[np.ndarray, str | None]:
    n, d = X.shape
    if d <= HDBSCAN_REDUCE_ABOVE_DIMS:
        return X, None
    dims = min(HDBSCAN_PCA_DIMS, n, d)
    Z = PCA(n_components=dims, random_state=seed).fit_transform(X).astype(np.float32)
    reduction = f"PCA({d}->{dims})"
    if n >= HDBSCAN_FAST_MIN_POINTS and dims > HDBSCAN_UMAP_DIMS:
        idx, dist = knn(Z, HDBSCAN_UMAP_NEIGHBORS - 1, "euclidean", seed)
        own = np.arange(n, dtype=idx.dtype)[:, None]  # UMAP counts each point as its own first neighbour
        neighbours = (np.hstack([own, idx]), np.hstack([np.zeros((n, 1), dist.dtype), dist]))
        Z = umap_embedding(
            Z, HDBSCAN_FAST_UMAP_DIMS, metric="euclidean", min_dist=0.0, seed=seed,
            n_neighbors=HDBSCAN_UMAP_NEIGHBORS, n_epochs=HDBSCAN_FAST_UMAP_EPOCHS, init="pca", neighbours=neighbours,
        )
        reduction += f"+UMAP({dims}->{HDBSCAN_FAST_UMAP_DIMS}, pca init, {HDBSCAN_FAST_UMAP_EPOCHS} epochs)"
    elif n >= HDBSCAN_UMAP_MIN_POINTS and dims > HDBSCAN_UMAP_DIMS:
        Z = umap_embedding(
            Z, HDBSCAN_UMAP_DIMS, metric="euclidean", min_dist=0.0, seed=seed,
            n_neighbors=HDBSCAN_UMAP_NEIGHBORS, n_epochs=HDBSCAN_UMAP_EPOCHS,
        )
        reduction += f"+UMAP({dims}->{HDBSCAN_UMAP_DIMS})"
    return Z, reduction


def _run_agglomerative(X: np.ndarray, p: AgglomerativeParams, seed: int, n_jobs: int | None) -> _Fitted:
    def agglomerate(k: int | None, threshold: float | None = None) -> np.ndarray:
        return AgglomerativeClustering(n_clusters=k, linkage=p.linkage, distance_threshold=threshold).fit_predict(X)

    def cuts_of_one_tree(S: np.ndarray) -> Callable[[int], np.ndarray]:
        # scipy builds the same (euclidean, Lance-Williams) tree as sklearn; building it
        # once and cutting it at every k is 19x cheaper than 19 sklearn fits.
        tree = hierarchy.linkage(S, method=p.linkage)
        return lambda k: hierarchy.fcluster(tree, t=k, criterion="maxclust")

    if p.n_clusters is None:
        return _Fitted(agglomerate(None, p.distance_threshold), "AgglomerativeClustering", p.model_dump())
    k, search = _resolve_k(X, p.n_clusters, seed, labeller=cuts_of_one_tree)
    return _Fitted(agglomerate(k), "AgglomerativeClustering", p.model_dump() | {"n_clusters": k}, auto_k=search)


def _run_spectral(X: np.ndarray, p: SpectralParams, seed: int, n_jobs: int | None) -> _Fitted:
    def check(n: int, k: int) -> None:
        if p.affinity == "nearest_neighbors" and p.n_neighbors >= n:
            raise ValueError(f"algorithm_params.n_neighbors ({p.n_neighbors}) must be below the number of points ({n})")
        if k >= n:
            raise ValueError(f"spectral clustering needs more points ({n}) than algorithm_params.n_clusters ({k})")

    def embed_once(S: np.ndarray) -> Callable[[int], np.ndarray]:
        # What SpectralClustering does per k (affinity -> Laplacian eigenvectors -> KMeans
        # on the first k), with the eigenvectors computed once for the largest k searched:
        # one eigensolve instead of 19 (~2 s each at 3k points). The search assigns labels
        # with KMeans even when assign_labels="discretize"; the final fit uses the user's.
        check(len(S), 2)
        if p.affinity == "rbf":
            affinity = rbf_kernel(S, gamma=1.0)  # SpectralClustering's default gamma
        else:
            graph = kneighbors_graph(S, n_neighbors=p.n_neighbors, include_self=True, n_jobs=n_jobs)
            affinity = 0.5 * (graph + graph.T)
        maps = spectral_embedding(
            affinity, n_components=min(AUTO_K_MAX, len(S) - 1), random_state=p.random_state, drop_first=False
        )
        return lambda k: KMeans(n_clusters=k, n_init=10, random_state=p.random_state).fit(maps[:, :k]).labels_

    k, search = _resolve_k(X, p.n_clusters, seed, labeller=embed_once)
    check(len(X), k)
    labels = SpectralClustering(
        n_clusters=k, affinity=p.affinity, n_neighbors=p.n_neighbors, assign_labels=p.assign_labels,
        random_state=p.random_state, n_jobs=n_jobs,
    ).fit_predict(X)
    return _Fitted(labels, "SpectralClustering", p.model_dump() | {"n_clusters": k}, auto_k=search)


def _run_gaussian_mixture(X: np.ndarray, p: GaussianMixtureParams, seed: int, n_jobs: int | None) -> _Fitted:
    def mixture(k: int) -> GaussianMixture:
        return GaussianMixture(n_components=k, covariance_type=p.covariance_type, random_state=p.random_state)

    def bic(S: np.ndarray, k: int) -> float:
        try:
            return mixture(k).fit(S).bic(S)
        except ValueError:  # too few points per component for this k: not a candidate
            return float("inf")

    k, search = _resolve_k(X, p.n_components, seed, name="n_components", bic=bic)
    try:
        labels = mixture(k).fit(X).predict(X)
    except ValueError as exc:
        if "ill-defined empirical covariance" not in str(exc):
            raise
        raise ValueError(
            f"gaussian_mixture could not fit {k} {p.covariance_type!r} covariances to {len(X)} points in "
            f"{X.shape[1]} dimensions (too few points per component); use covariance_type \"diag\" or "
            "\"spherical\", or fewer n_components"
        ) from None
    return _Fitted(labels, "GaussianMixture", p.model_dump() | {"n_components": k}, auto_k=search)


def _run_mean_shift(X: np.ndarray, p: MeanShiftParams, seed: int, n_jobs: int | None) -> _Fitted:
    bandwidth = p.bandwidth
    if bandwidth is None:
        # estimate_bandwidth is O(m^2) in the rows it sees, hence the seeded sample.
        sample = X[_sample_rows(len(X), MEAN_SHIFT_BANDWIDTH_SAMPLE, seed)]
        bandwidth = float(estimate_bandwidth(sample, quantile=0.3))  # sklearn MeanShift's own default
        if not bandwidth > 0:
            raise ValueError(
                "could not estimate a bandwidth (the sampled points coincide); set algorithm_params.bandwidth"
            )
    # cluster_all=True: every point joins its nearest mode, so mean_shift yields no noise.
    labels = MeanShift(bandwidth=bandwidth, bin_seeding=p.bin_seeding, cluster_all=True, n_jobs=n_jobs).fit_predict(X)
    return _Fitted(labels, "MeanShift", p.model_dump() | {"bandwidth": bandwidth})


def _run_optics(X: np.ndarray, p: OPTICSParams, seed: int, n_jobs: int | None) -> _Fitted:
    if p.min_samples > len(X):
        raise ValueError(
            f"algorithm_params.min_samples ({p.min_samples}) exceeds the number of points ({len(X)}); lower it"
        )
    labels = OPTICS(
        min_samples=p.min_samples, max_eps=resolved_max_eps(p), cluster_method=p.cluster_method, xi=p.xi,
        eps=p.eps, metric="euclidean",
        # No n_jobs: OPTICS queries neighbours one point at a time, and joblib's start-up
        # per query made 300 points take 6.0 s instead of 0.17 s.
    ).fit_predict(X)
    return _Fitted(labels, "OPTICS", p.model_dump())


def _run_leiden(X: np.ndarray, p: LeidenParams, seed: int, n_jobs: int | None) -> _Fitted:
    k = min(p.n_neighbors, len(X) - 1)
    idx, dist = knn(X, k, p.metric, seed)
    found = leiden(idx, similarity_weights(dist, p.metric), resolution=p.resolution,
                   objective_function=p.objective_function, n_iterations=p.n_iterations, seed=p.random_state)
    labels = found.labels
    if p.min_cluster_size:
        sizes = np.bincount(labels)
        labels = np.where(sizes[labels] < p.min_cluster_size, NOISE, labels)
    return _Fitted(labels, "Leiden", p.model_dump() | {"n_neighbors": k}, reduction=None)


def _run_evoc(X: np.ndarray, p: EVoCParams, seed: int, n_jobs: int | None) -> _Fitted:
    import evoc  # a heavy import (numba), needed only here

    k = min(p.n_neighbors, len(X) - 1)
    if p.base_min_cluster_size > len(X):
        raise ValueError(
            f"algorithm_params.base_min_cluster_size ({p.base_min_cluster_size}) exceeds the number of points "
            f"({len(X)}); lower it"
        )
    model = evoc.EVoC(
        noise_level=p.noise_level, base_min_cluster_size=p.base_min_cluster_size,
        approx_n_clusters=p.approx_n_clusters, n_neighbors=k, min_samples=min(p.min_samples, len(X) - 1),
        random_state=p.random_state,
    )
    labels = model.fit_predict(X)
    return _Fitted(labels, "EVoC", p.model_dump() | {"n_neighbors": k})


def plain_graph(S: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The plain kNN graph of the rows of S (the quality anchor's, and the k search's):
    AUTO_K_NEIGHBORS nearest others by cosine, weights 1 - distance. As auto_graph."""
    k = min(AUTO_K_NEIGHBORS, len(S) - 1)
    idx, dist = knn(S, k, "cosine", seed)
    return idx, similarity_weights(dist, "cosine"), f"kNN({k}, cosine, weights 1 - distance)"


def auto_graph(S: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """auto's graph of the rows of S: each row's AUTO_NEIGHBORS nearest others by cosine
    once the rows' mean is subtracted, weighed by local scaling; below
    AUTO_LOCAL_SCALING_MIN_DIMS dimensions the plain graph (AUTO_K_NEIGHBORS raw cosine
    neighbours, weights 1 - distance). See the AUTO_* comment. Returns (indices,
    weights, what the graph is)."""
    if S.shape[1] < AUTO_LOCAL_SCALING_MIN_DIMS:
        return plain_graph(S, seed)
    k = min(AUTO_NEIGHBORS, len(S) - 1)
    scale = min(AUTO_SCALE_NEIGHBOR, k)
    idx, dist = knn(S - S.mean(axis=0, dtype=np.float64).astype(S.dtype), k, "cosine", seed)
    return idx, local_scaling_weights(idx, dist, scale), (
        f"kNN({k}, cosine of the mean-centred vectors, locally scaled weights: each point's scale its "
        f"distance to its {scale}th neighbour)")


def auto_min_cluster_size(n: int) -> int:
    """The smallest community auto keeps as its own cluster: 1 % of the points, at least 5."""
    return max(AUTO_MIN_CLUSTER_SIZE, int(round(AUTO_MIN_CLUSTER_SHARE * n)))


def _run_auto(X: np.ndarray, p: AutoParams, seed: int, n_jobs: int | None) -> _Fitted:
    n = len(X)
    rows = _sample_rows(n, AUTO_CLUSTER_SAMPLE, seed)
    S = X[rows]
    idx, weights, graph = auto_graph(S, seed)
    k = idx.shape[1]
    restarts = {p.random_state + i: leiden(idx, weights, resolution=AUTO_RESOLUTION, n_iterations=-1,
                                           seed=p.random_state + i)
                for i in range(AUTO_RESTARTS)}
    chosen_seed = max(restarts, key=lambda s: (restarts[s].quality, -s))
    communities = restarts[chosen_seed].labels
    sizes = np.bincount(communities)
    min_size = auto_min_cluster_size(len(S))
    kept = sizes >= min_size
    if not kept.any():  # every community is small (a tiny input): keep them all
        kept[:] = True
    # Members of small communities are auto's noise (the noise policy decides their fate);
    # points outside the sample go to the nearest kept community.
    labels = np.full(n, NOISE, dtype=np.int64)
    assigned = np.zeros(n, dtype=bool)
    core = kept[communities]
    labels[rows[core]] = communities[core]
    outside = np.ones(n, dtype=bool)
    outside[rows] = False
    if outside.any():
        kept_ids = np.flatnonzero(kept)
        centres = compute_centroids(S[core], np.searchsorted(kept_ids, communities[core])).vectors
        nearest, _ = nearest_centroid(X[outside], centres)
        labels[outside] = kept_ids[nearest]
        assigned[outside] = True
    choice = {
        "pipeline": f"{graph} + Leiden(RBConfiguration, resolution "
                    f"{AUTO_RESOLUTION:g}, until stable)",
        "why": "needs no k and leaves no noise; it matched or beat KMeans with the true k, UMAP + HDBSCAN "
               "and EVoC on clusterflow's labelled sets (bench/quality.py)",
        "criterion": f"Leiden objective (RBConfiguration quality, higher is better), best of {AUTO_RESTARTS} "
                     "seeded restarts",
        "scores": {str(s): round(r.quality, 4) for s, r in restarts.items()},
        "chosen_seed": chosen_seed,
        "communities": int(len(sizes)),
        "min_cluster_size": min_size,
        "small_communities_merged": int((~kept).sum()),
        "points_in_small_communities": int((~core).sum()),
        "clustered_sample": int(len(S)),
        "assigned_to_nearest_centroid": int(n - len(S)),
    }
    params = p.model_dump() | {"n_neighbors": k, "resolution": AUTO_RESOLUTION, "min_cluster_size": min_size}
    return _Fitted(labels, "Leiden", params, assigned=assigned, choice=choice)


_RUNNERS: dict[ClusteringMethod, Callable[[np.ndarray, Any, int, int | None], _Fitted]] = {
    ClusteringMethod.KMEANS: _run_kmeans,
    ClusteringMethod.DBSCAN: _run_dbscan,
    ClusteringMethod.HDBSCAN: _run_hdbscan,
    ClusteringMethod.AGGLOMERATIVE: _run_agglomerative,
    ClusteringMethod.SPECTRAL: _run_spectral,
    ClusteringMethod.GAUSSIAN_MIXTURE: _run_gaussian_mixture,
    ClusteringMethod.MEAN_SHIFT: _run_mean_shift,
    ClusteringMethod.OPTICS: _run_optics,
    ClusteringMethod.LEIDEN: _run_leiden,
    ClusteringMethod.EVOC: _run_evoc,
    ClusteringMethod.AUTO: _run_auto,
}
