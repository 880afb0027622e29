"""One vocabulary inside (docs/vocabulary.md): in the events, `cluster_id` is only ever a
cluster definition's id, a run's groups of points ("cl_<n>") are `group_id` (or
`*_group_id(s)`), and the REST name `source_execution_ids` stays at the REST edge."""
from __future__ import annotations

import inspect
import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

import contracts.events as events
from contracts.events import CLUSTER_ID_DOC, ExecutionClustered

ROOT = Path(__file__).resolve().parents[2]
GROUP_VALUE = re.compile(r"^cl_-?\d+$")
GROUP_FIELD = re.compile(r"(^|_)group_ids?$")
CLUSTER_FIELD = re.compile(r"cluster_ids?$")

EVENT_MODELS = sorted((m for m in vars(events).values() if inspect.isclass(m) and issubclass(m, BaseModel)
                       and m.__module__ == events.__name__), key=lambda m: m.__name__)


def test_the_events_name_a_cluster_id_only_for_the_definition():
    named = {(m.__name__, name) for m in EVENT_MODELS for name in m.model_fields if CLUSTER_FIELD.search(name)}
    assert ("Event", "cluster_id") in named and ("SourceRun", "cluster_id") in named
    for model, name in sorted(named):
        field = events.__dict__[model].model_fields[name]
        assert name == "cluster_id", f"{model}.{name} names a group of points: call it *_group_id(s)"
        assert field.description == CLUSTER_ID_DOC, (
            f"{model}.cluster_id: describe it as the cluster definition's id (CLUSTER_ID_DOC), "
            "or, if it holds a group of points, name it group_id")


def test_the_events_group_valued_fields_are_named_group():
    expected = {("CentroidSummary", "group_id"), ("CentroidSummary", "parent_group_id"),
                ("CentroidSummary", "child_group_ids"), ("ClusterLabel", "group_id"),
                ("LineageEvent", "previous_group_ids"), ("LineageEvent", "current_group_ids"),
                ("SourceClusterGroup", "source_group_id"), ("SourceClusterGroup", "group_id")}
    found = {(m.__name__, name) for m in EVENT_MODELS for name in m.model_fields if GROUP_FIELD.search(name)}
    assert expected <= found, expected - found
    assert all(m.__name__ == "RunOptions" or "source_execution_ids" not in m.model_fields for m in EVENT_MODELS)
    assert "source_execution_ids" not in events.RunOptions.model_fields
    assert "source_run_ids" in events.RunOptions.model_fields and "source_run_ids" in ExecutionClustered.model_fields


def _misnamed(value, path: tuple[str, ...] = ()) -> list[str]:
    """The paths (field names, innermost last) where a group id sits under a field not
    named for a group, or a `cluster_id` holds one."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _misnamed(item, (*path, str(key)))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += _misnamed(item, path)
    elif isinstance(value, str) and GROUP_VALUE.match(value):
        if not path or not GROUP_FIELD.search(path[-1]):
            found.append(".".join(path))
    return found


def test_the_probe_sees_a_group_under_a_misnamed_field():
    assert _misnamed({"centroids": [{"cluster_id": "cl_3"}], "cluster_id": "clust_1"}) == ["centroids.cluster_id"]
    assert _misnamed({"centroids": [{"group_id": "cl_3", "child_group_ids": ["cl_1"]}]}) == []


@pytest.fixture
def runs(tmp_path):
    """A full run, a second full run matched to it (lineage, inherited labels) and a
    composite run of both, through the clusterer's handler over the fakes."""
    from clusterflow.segments import SegmentCache
    from services.clusterer.handler import Clusterer
    from tests.fakes import FakeRunState, MemoryProcessed, MemorySegmentLedger, OffLoopObjectStore, RecordingPublisher
    from tests.unit import test_clusterer_handler as h

    store = OffLoopObjectStore()
    rig = Clusterer(store=store, cache=SegmentCache(store, tmp_path / "cache", 10**9), ledger=MemorySegmentLedger(),
                    publisher=RecordingPublisher(), processed=MemoryProcessed(), runs=FakeRunState(), heartbeat_s=60.0)
    ids, X = h.blobs()
    one = h.handled(rig, h.prepared(rig, "run_1", ids, X))
    groups = h.groups_of(rig, one)
    ids2, X2 = h.blobs(seed=7, prefix="new")
    two = h.handled(rig, h.prepared(rig, "run_2", ids2, X2, previous=h.as_source(one, h.LABELS, groups=groups)))
    rows, vectors = [], []
    for run in (one, two):
        frame = rig.store.get_parquet(run.artifacts.centroids_key)
        for key, centroid in frame.drop_nulls("centroid").select("cluster_id", "centroid").iter_rows():
            rows.append(f"{run.run_id}/{key}")
            vectors.append(centroid)
    composite = h.handled(rig, h.prepared(rig, "run_c", rows, np.asarray(vectors, dtype=np.float32),
                                          mode="composite", sources=[h.as_source(one), h.as_source(two)]))
    return one, two, composite


def test_every_group_id_in_the_clusterers_events_sits_under_a_group_field(runs):
    one, two, composite = runs
    assert two.lineage.events and composite.source_clusters  # what the probe must see
    for event in runs:
        wire = event.model_dump(mode="json")
        assert wire["cluster_id"] == "clust_1"
        assert _misnamed(wire) == [], event.run_id


# Where the REST name of a composite run's sources may be written: the REST models, the
# gateway (the REST edge), the REST client, and the read model's storage names (its
# column, the JSONB keys past runs were written with, and the task's additional_data).
SOURCE_EXECUTION_IDS_AT = ("contracts/api.py", "contracts/resources.py", "services/gateway/", "clusterflow/client/",
                           "clusterflow/readmodel.py", "clusterflow/db/schema.py", "clusterflow/migrations/")


def _uses(path: Path, word: str) -> list[int]:
    """The lines where `word` is a name or inside a string (not in a comment)."""
    lines = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type in (tokenize.NAME, tokenize.STRING) and word in token.string:
            # contracts/events.py reads the old key of a renamed field (and says so in
            # its docstrings): that is allowed
            if path.name == "events.py" and ("_renamed(" in token.line or token.string.startswith('"""')):
                continue
            lines.append(token.start[0])
    return lines


def test_source_execution_ids_stays_at_the_rest_edge():
    offenders = {}
    for top in ("contracts", "clusterflow", "services"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(SOURCE_EXECUTION_IDS_AT):
                continue
            if lines := _uses(path, "source_execution_ids"):
                offenders[rel] = lines
    assert offenders == {}, f"source_execution_ids outside the REST edge (call it source_run_ids): {offenders}"
    # and the check does see a use where there is one
    assert _uses(ROOT / "services/gateway/routes/runs.py", "source_execution_ids")
