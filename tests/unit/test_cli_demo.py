"""The demo stays honest: what it sends the service carries no category, and its
yardstick (KMeans told the true k) is scored on the same vectors."""
from __future__ import annotations

import numpy as np
import polars as pl

from clusterflow.client import demo
from tests.fakes.client import RecordingClient


def sample(n_per: int = 20) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    centers = np.eye(3, 8) * 5
    X = np.concatenate([c + rng.normal(scale=0.1, size=(n_per, 8)) for c in centers]).astype(np.float32)
    categories = [name for name in ("Arts", "Science", "Sport") for _ in range(n_per)]
    return pl.DataFrame({"document_id": [f"d{i}" for i in range(len(X))], "title": [f"t{i}" for i in range(len(X))],
                         "text": ["words"] * len(X), "category": categories,
                         "embedding": X}, schema_overrides={"embedding": pl.Array(pl.Float32, 8)})


def test_the_labeler_never_sees_the_category():
    client, frame = RecordingClient(), sample()
    assert demo.load_sample(client, frame, "s") == "col_1"
    assert len(client.documents) == frame.height
    assert {tuple(sorted(d["payload"])) for d in client.documents} == {("text", "title")}
    assert not any("Sport" in str(d["payload"]) for d in client.documents)


def test_kmeans_yardstick_uses_the_true_k():
    k, ari = demo.kmeans_true_k_ari(sample())
    assert k == 3 and ari == 1.0


def test_the_services_logs_go_under_clusterflow_home(monkeypatch, tmp_path):
    """The demo's services log where servers.sh keeps the servers' logs: two homes (two
    checkouts, two users of one machine) never write into each other's files."""
    monkeypatch.setenv("CLUSTERFLOW_HOME", str(tmp_path / "home"))
    assert demo.log_dir() == tmp_path / "home" / "logs" / "services"
    monkeypatch.delenv("CLUSTERFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert demo.log_dir() == tmp_path / ".clusterflow" / "logs" / "services"
