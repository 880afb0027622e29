"""Algorithm parameters as data: one strict pydantic model per clustering method.

Names and defaults follow the reference ("Algorithms and defaults" in
clusters-api-surface.md). Models are strict (a JSON ``5`` is an int, ``"5"`` and ``true``
are not) and forbid unknown keys, so a typo such as ``n_cluster`` is an error instead of
a silently ignored setting. ``validate_params`` is the single entry point; it turns
pydantic's ValidationError into a ValueError whose text says which parameter to change
and what it may be, e.g. ``algorithm_params.n_clusters: must be an integer >= 2 or
"auto" (got 1)``.

Sampling caps live here too because they are data about the methods, not code paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "AgglomerativeParams",
    "AutoParams",
    "EVoCParams",
    "LeidenParams",
    "ClusteringMethod",
    "DBSCANParams",
    "GaussianMixtureParams",
    "HDBSCANParams",
    "KMeansParams",
    "MAX_POINTS",
    "MeanShiftParams",
    "OPTICSParams",
    "PARAMS_MODELS",
    "RAY_MAX_POINTS",
    "SPECTRAL_RBF_MAX_POINTS",
    "SpectralParams",
    "PREPROCESSING_METHODS",
    "NoReductionStep",
    "UMAPStep",
    "WhiteningStep",
    "cap_for",
    "parse_method",
    "validate_params",
    "validate_preprocessing",
]


class ClusteringMethod(str, Enum):
    KMEANS = "kmeans"
    DBSCAN = "dbscan"
    HDBSCAN = "hdbscan"
    AGGLOMERATIVE = "agglomerative"
    SPECTRAL = "spectral"
    GAUSSIAN_MIXTURE = "gaussian_mixture"
    MEAN_SHIFT = "mean_shift"
    OPTICS = "optics"
    LEIDEN = "leiden"
    EVOC = "evoc"
    AUTO = "auto"


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)

# A fixed default seed (the reference's random_state 42) makes reruns reproducible;
# None is not offered because reproducibility is part of the product.
_RandomState = Annotated[int, Field(ge=0, le=2**32 - 1)]


def _count_or_auto(minimum: int, *, allow_none: bool = False) -> Callable[[Any], Any]:
    """Check an ``int >= minimum`` or ``"auto"`` (or None) in one place: pydantic reports a
    failed ``int | Literal["auto"]`` union as one error per member, this gives one message
    that names every accepted form."""
    accepted = f'an integer >= {minimum} or "auto"' + (" or null" if allow_none else "")

    def check(value: Any) -> Any:
        if value == "auto" or (value is None and allow_none):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be {accepted}")
        return value

    return check


# What a density method does with its noise: "keep" it as -1 (the reference's behaviour,
# the default of the named methods), "assign" every noise point to its nearest cluster,
# or "cap" the noise share at max_noise_share, assigning the points nearest a cluster
# first. Members placed this way are marked "assigned" in the results.
NoisePolicy = Literal["keep", "assign", "cap"]
NoiseShare = Annotated[float, Field(ge=0, le=1)]

ClusterCount = Annotated[int | Literal["auto"], BeforeValidator(_count_or_auto(2))]
ComponentCount = Annotated[int | Literal["auto"], BeforeValidator(_count_or_auto(1))]
ClusterCountOrNone = Annotated[int | Literal["auto"] | None, BeforeValidator(_count_or_auto(2, allow_none=True))]


class KMeansParams(BaseModel):
    model_config = _STRICT

    n_clusters: ClusterCount = 8
    max_iter: int = Field(300, ge=1)
    n_init: int = Field(10, ge=1, le=100)
    tol: float = Field(1e-4, ge=0)
    init: Literal["k-means++", "random"] = "k-means++"
    random_state: _RandomState = 42


class DBSCANParams(BaseModel):
    model_config = _STRICT

    eps: float = Field(0.5, gt=0)
    min_samples: int = Field(5, ge=1)
    metric: Literal["euclidean", "cosine", "manhattan"] = "euclidean"
    noise_policy: NoisePolicy = "keep"
    max_noise_share: NoiseShare = 0.1  # noise_policy "cap" only


class HDBSCANParams(BaseModel):
    """``cluster_selection_epsilon`` is a distance in the space HDBSCAN actually sees,
    which is the reduced space when the input has more than a few dozen dimensions
    (see ``algorithms.HDBSCAN_REDUCE_ABOVE_DIMS``)."""

    model_config = _STRICT

    min_cluster_size: int = Field(5, ge=2)
    min_samples: int | None = Field(None, ge=1)  # None -> min_cluster_size
    cluster_selection_epsilon: float = Field(0.0, ge=0)
    max_cluster_size: int | None = Field(None, ge=2)  # None -> unlimited
    cluster_selection_method: Literal["eom", "leaf"] = "eom"
    allow_single_cluster: bool = False
    noise_policy: NoisePolicy = "keep"
    max_noise_share: NoiseShare = 0.1  # noise_policy "cap" only

    @model_validator(mode="after")
    def _max_not_below_min(self) -> HDBSCANParams:
        if self.max_cluster_size is not None and self.max_cluster_size < self.min_cluster_size:
            raise ValueError(
                f"max_cluster_size ({self.max_cluster_size}) must be >= min_cluster_size "
                f"({self.min_cluster_size}); raise max_cluster_size or leave it null"
            )
        return self


class AgglomerativeParams(BaseModel):
    """Exactly one of ``n_clusters`` and ``distance_threshold`` decides where the tree is
    cut. Giving only ``distance_threshold`` clears the default ``n_clusters`` (so callers
    need not send ``n_clusters: null``); giving both explicitly is an error."""

    model_config = _STRICT

    n_clusters: ClusterCountOrNone = 2
    linkage: Literal["ward", "complete", "average", "single"] = "ward"
    distance_threshold: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _threshold_replaces_default_k(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("distance_threshold") is not None and "n_clusters" not in data:
            return {**data, "n_clusters": None}
        return data

    @model_validator(mode="after")
    def _exactly_one_cut(self) -> AgglomerativeParams:
        if (self.n_clusters is None) == (self.distance_threshold is None):
            raise ValueError(
                "give exactly one of n_clusters and distance_threshold "
                f"(got n_clusters={self.n_clusters!r}, distance_threshold={self.distance_threshold!r})"
            )
        return self


class SpectralParams(BaseModel):
    model_config = _STRICT

    n_clusters: ClusterCount = 8
    affinity: Literal["rbf", "nearest_neighbors"] = "rbf"
    n_neighbors: int = Field(10, ge=2)  # used by affinity="nearest_neighbors" only
    assign_labels: Literal["kmeans", "discretize"] = "kmeans"
    random_state: _RandomState = 42


class GaussianMixtureParams(BaseModel):
    model_config = _STRICT

    n_components: ComponentCount = 1
    covariance_type: Literal["full", "tied", "diag", "spherical"] = "full"
    random_state: _RandomState = 42


class MeanShiftParams(BaseModel):
    model_config = _STRICT

    bandwidth: float | None = Field(None, gt=0)  # None -> sklearn.cluster.estimate_bandwidth
    bin_seeding: bool = False


class OPTICSParams(BaseModel):
    """``eps`` is not in the reference list but ``cluster_method="dbscan"`` means nothing
    without it (sklearn falls back to ``max_eps``, which defaults to infinity and would put
    every point in one cluster), so it is accepted and required for that method."""

    model_config = _STRICT

    min_samples: int = Field(5, ge=2)
    max_eps: float | None = Field(None, gt=0)  # None -> infinity
    cluster_method: Literal["xi", "dbscan"] = "xi"
    xi: float = Field(0.05, ge=0, le=1)
    eps: float | None = Field(None, gt=0)  # cluster_method="dbscan" only
    noise_policy: NoisePolicy = "keep"
    max_noise_share: NoiseShare = 0.1  # noise_policy "cap" only

    @model_validator(mode="after")
    def _dbscan_needs_a_radius(self) -> OPTICSParams:
        if self.cluster_method == "dbscan":
            if self.eps is None and self.max_eps is None:
                raise ValueError('cluster_method "dbscan" needs eps (or a finite max_eps)')
            if self.eps is not None and self.max_eps is not None and self.eps > self.max_eps:
                raise ValueError(f"eps ({self.eps}) must be <= max_eps ({self.max_eps})")
        return self


class LeidenParams(BaseModel):
    """The hosted SDK's LeidenParams: a kNN graph over the points (edge weight
    1 - cosine distance, or 1 / (1 + euclidean distance)), then Leiden community
    detection (leidenalg). No n_clusters: the graph decides the count; ``resolution``
    moves it (higher, more and smaller communities). Communities smaller than
    ``min_cluster_size`` become noise (0 keeps every community). ``n_iterations`` -1
    iterates until the partition stops improving."""

    model_config = _STRICT

    resolution: float = Field(1.0, gt=0, le=100)
    n_neighbors: int = Field(30, ge=2, le=200)
    metric: Literal["cosine", "euclidean"] = "cosine"
    min_cluster_size: int = Field(0, ge=0)
    objective_function: Literal["RBConfiguration", "modularity", "CPM"] = "RBConfiguration"
    n_iterations: int = Field(2, ge=-1)
    random_state: _RandomState = 42

    @model_validator(mode="after")
    def _iterations_not_zero(self) -> LeidenParams:
        if self.n_iterations == 0:
            raise ValueError("n_iterations must be -1 (until stable) or >= 1 (got 0)")
        return self


class EVoCParams(BaseModel):
    """The hosted SDK's EVoCParams, passed to PyPI ``evoc``'s EVoC (Embedding Vector
    Oriented Clustering: a node embedding of the kNN graph, then density clustering)."""

    model_config = _STRICT

    noise_level: float = Field(0.5, ge=0, le=1)
    base_min_cluster_size: int = Field(5, ge=2)
    approx_n_clusters: int | None = Field(None, ge=2)
    n_neighbors: int = Field(15, ge=2, le=200)
    min_samples: int = Field(5, ge=1)
    random_state: _RandomState = 42


class AutoParams(BaseModel):
    """clusterflow's default, which needs no k: see ``algorithms._run_auto``. Nothing to
    tune; ``random_state`` picks other restarts, and ``noise_policy`` says what becomes
    of the members of communities too small to be clusters (merged by default)."""

    model_config = _STRICT

    random_state: _RandomState = 42
    # auto's small communities are its noise candidates: merged by default.
    noise_policy: NoisePolicy = "assign"
    max_noise_share: NoiseShare = 0.1


PARAMS_MODELS: dict[ClusteringMethod, type[BaseModel]] = {
    ClusteringMethod.KMEANS: KMeansParams,
    ClusteringMethod.DBSCAN: DBSCANParams,
    ClusteringMethod.HDBSCAN: HDBSCANParams,
    ClusteringMethod.AGGLOMERATIVE: AgglomerativeParams,
    ClusteringMethod.SPECTRAL: SpectralParams,
    ClusteringMethod.GAUSSIAN_MIXTURE: GaussianMixtureParams,
    ClusteringMethod.MEAN_SHIFT: MeanShiftParams,
    ClusteringMethod.OPTICS: OPTICSParams,
    ClusteringMethod.LEIDEN: LeidenParams,
    ClusteringMethod.EVOC: EVoCParams,
    ClusteringMethod.AUTO: AutoParams,
}


def parse_method(method: str | ClusteringMethod) -> ClusteringMethod:
    try:
        return ClusteringMethod(method)
    except ValueError:
        known = ", ".join(m.value for m in ClusteringMethod)
        raise ValueError(f"unknown clustering_method {method!r}; use one of: {known}") from None


def validate_params(method: str | ClusteringMethod, params: dict[str, Any] | None) -> BaseModel:
    """Validate ``params`` for ``method`` and return the frozen params model.

    Raises ValueError naming every offending parameter, e.g.
    ``algorithm_params.n_clusters: must be an integer >= 2 or "auto" (got 1)``.
    """
    model = PARAMS_MODELS[parse_method(method)]
    if params is None:
        params = {}
    if isinstance(params, model):
        return params
    if not isinstance(params, dict):
        raise ValueError(f"algorithm_params must be an object (got {type(params).__name__})")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise ValueError("; ".join(_describe(err, model) for err in exc.errors(include_url=False))) from None


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(part) for part in err["loc"])
    where = f"algorithm_params.{loc}" if loc else "algorithm_params"
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return f"{where}: unknown parameter; {model.__name__} accepts: {known}"
    phrases = {
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')}",
        "greater_than": lambda: f"must be > {ctx.get('gt')}",
        "less_than_equal": lambda: f"must be <= {ctx.get('le')}",
        "less_than": lambda: f"must be < {ctx.get('lt')}",
        "literal_error": lambda: f"must be one of {ctx.get('expected')}",
        "int_type": lambda: "must be an integer",
        "float_type": lambda: "must be a number",
        "bool_type": lambda: "must be true or false",
        "finite_number": lambda: "must be a finite number",
        # Our own validators raise ValueError("..."); pydantic prefixes "Value error, ".
        "value_error": lambda: str(ctx.get("error", err["msg"])),
    }
    phrase = phrases.get(kind, lambda: err["msg"])()
    if not err["loc"]:  # a whole-model rule: its message already quotes the values
        return f"{where}: {phrase}"
    return f"{where}: {phrase} (got {err['input']!r})"


# --- preprocessing_steps ------------------------------------------------------------
#
# The hosted SDK's VectorBasedConfigInput.preprocessing_steps: an ordered list applied to
# the vectors before clustering; when set it replaces the engine's own reduction (hdbscan's
# PCA + UMAP). Each step is one of the SDK's WhiteningParams, UMAPParams, NoReduction, with
# their names and defaults. The SDK also lists TSNEParams; t-SNE has no transform and is a
# picture, not a space to cluster in, so clusterflow refuses it with the allowed methods.

class WhiteningStep(BaseModel):
    """Centre the vectors and scale each principal direction to unit variance (PCA
    whitening); eigenvalues below ``regularization`` are floored at it."""

    model_config = _STRICT

    method: Literal["whitening"] = "whitening"
    regularization: float = Field(1e-5, ge=0)


class UMAPStep(BaseModel):
    model_config = _STRICT

    method: Literal["umap"] = "umap"
    n_components: int = Field(50, ge=2, le=256)
    random_state: _RandomState = 42
    n_neighbors: int = Field(30, ge=2)
    min_dist: float = Field(0.0, ge=0, le=1)
    metric: Literal["cosine", "euclidean"] = "cosine"


class NoReductionStep(BaseModel):
    model_config = _STRICT

    method: Literal["none"] = "none"


PREPROCESSING_METHODS: dict[str, type[BaseModel]] = {
    "whitening": WhiteningStep, "umap": UMAPStep, "none": NoReductionStep,
}
MAX_PREPROCESSING_STEPS = 8
PreprocessingStep = WhiteningStep | UMAPStep | NoReductionStep


def validate_preprocessing(steps: list[Any] | None) -> list[PreprocessingStep]:
    """Validate ``preprocessing_steps`` (None or a list of {"method": ..., ...} objects)
    and return the step models in order. Raises ValueError naming the step and field,
    e.g. ``preprocessing_steps[1].method: must be one of 'whitening', 'umap', 'none' (got 'tsne')``."""
    if steps is None:
        return []
    if not isinstance(steps, list):
        raise ValueError(f"preprocessing_steps must be a list of steps (got {type(steps).__name__})")
    if len(steps) > MAX_PREPROCESSING_STEPS:
        raise ValueError(f"preprocessing_steps: at most {MAX_PREPROCESSING_STEPS} steps (got {len(steps)})")
    allowed = ", ".join(repr(m) for m in PREPROCESSING_METHODS)
    out: list[PreprocessingStep] = []
    for i, step in enumerate(steps):
        if isinstance(step, tuple(PREPROCESSING_METHODS.values())):
            out.append(step)
            continue
        where = f"preprocessing_steps[{i}]"
        if not isinstance(step, dict):
            raise ValueError(f"{where}: must be an object with a method, one of {allowed} (got {step!r})")
        method = step.get("method")
        if method not in PREPROCESSING_METHODS:
            raise ValueError(f"{where}.method: must be one of {allowed} (got {method!r})")
        model = PREPROCESSING_METHODS[method]
        try:
            out.append(model.model_validate(step))
        except ValidationError as exc:
            text = "; ".join(_describe(err, model) for err in exc.errors(include_url=False))
            raise ValueError(text.replace("algorithm_params", where)) from None
    return out


# --- sampling caps -------------------------------------------------------------------
#
# The most points one run may cluster; the service samples down to this before calling
# the engine, and run_clustering refuses more. Linear methods (kmeans, auto) get the
# reference's 1M ceiling; gaussian_mixture's full-covariance EM steps hold it to 200K;
# the quadratic density and graph methods get the reference's 50K; optics and mean_shift,
# one Python-level neighbour query per point or seed, get what finishes in minutes. The
# measurements behind each: docs/engine-measurements.md.
MAX_POINTS: dict[ClusteringMethod, int] = {
    ClusteringMethod.KMEANS: 1_000_000,
    ClusteringMethod.GAUSSIAN_MIXTURE: 200_000,
    ClusteringMethod.HDBSCAN: 50_000,
    ClusteringMethod.AGGLOMERATIVE: 50_000,
    ClusteringMethod.SPECTRAL: 50_000,
    ClusteringMethod.DBSCAN: 50_000,
    ClusteringMethod.OPTICS: 10_000,
    ClusteringMethod.MEAN_SHIFT: 5_000,
    ClusteringMethod.LEIDEN: 50_000,
    ClusteringMethod.EVOC: 50_000,
    ClusteringMethod.AUTO: 1_000_000,
}

# On the Ray engine kmeans holds no run's matrix in any process (k-means block by block:
# services/clusterer/ray_job.py), so its cap there is not the in-process one. 5M is
# issue 13's target (every process below half the dataset); the parts that grow with
# the run were measured under it alone at 5M, the whole service at 1M and 2M's first
# import so far (docs/engine-measurements.md, `bench/ray_engine.py --service`). Other
# methods run as one task with the whole matrix: their caps stay.
RAY_MAX_POINTS: dict[ClusteringMethod, int] = {ClusteringMethod.KMEANS: 5_000_000}

# Spectral clustering with affinity="rbf" materialises a dense N x N float64 affinity:
# 50K points would be 20 GB, 10K is 0.8 GB. affinity="nearest_neighbors" is sparse and
# keeps the 50K cap.
SPECTRAL_RBF_MAX_POINTS = 10_000


def cap_for(method: str | ClusteringMethod, params: BaseModel | dict[str, Any] | None = None, *,
            on_ray: bool = False) -> int:
    """The most points ``method`` may cluster in one run (``params`` refines the answer
    for spectral clustering, whose memory depends on the affinity; ``on_ray``: a run
    the Ray engine computes, `RAY_MAX_POINTS`)."""
    method = parse_method(method)
    cap = RAY_MAX_POINTS.get(method, MAX_POINTS[method]) if on_ray else MAX_POINTS[method]
    if method is ClusteringMethod.SPECTRAL and params is not None:
        affinity = params.get("affinity", "rbf") if isinstance(params, dict) else getattr(params, "affinity")
        if affinity == "rbf":
            cap = min(cap, SPECTRAL_RBF_MAX_POINTS)
    return cap


def resolved_min_samples(params: HDBSCANParams) -> int:
    return params.min_samples if params.min_samples is not None else params.min_cluster_size


def resolved_max_eps(params: OPTICSParams) -> float:
    return params.max_eps if params.max_eps is not None else math.inf
