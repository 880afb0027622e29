"""The deployment files parse and agree with each other (no kubectl or docker here)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from clusterflow.observability import DEFAULT_METRICS_PORTS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_kubernetes_manifests_parse_and_probe_the_metrics_ports() -> None:
    kinds = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                kinds[(doc["kind"], doc["metadata"]["name"])] = doc
    for service, port in {**DEFAULT_METRICS_PORTS, "gateway": 8000}.items():
        spec = kinds[("Deployment", service)]["spec"]["template"]["spec"]["containers"][0]
        assert spec["ports"][0]["containerPort"] == port
        assert spec["livenessProbe"]["httpGet"]["path"] == "/health"
        assert spec["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert spec["resources"]["limits"]["memory"]
    assert ("Job", "clusterflow-migrate") in kinds and ("Service", "gateway") in kinds


def test_compose_prometheus_and_grafana_files_exist_and_parse() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert {"gateway", "preparer", "clusterer", "labeler", "status", "kafka", "postgres", "minio",
            "prometheus", "grafana"} <= set(compose["services"])
    for service in ("prometheus", "grafana"):
        for volume in compose["services"][service]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
    scraped = {job["job_name"]: job["dns_sd_configs"][0]["port"]
               for job in yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]}
    assert scraped == {**DEFAULT_METRICS_PORTS, "gateway": 8000}
    for path in (DEPLOY / "grafana" / "provisioning").rglob("*.yaml"):
        yaml.safe_load(path.read_text())
    uids = {d["uid"] for d in yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/clusterflow.yaml").read_text())["datasources"]}
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
