"""The deployment files parse and agree with each other (no kubectl or docker here)."""
from __future__ import annotations

import json
import re
import tomllib
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


def _script_default(name: str) -> int:
    """A port's default as deploy/local/servers.sh sets it (`X=${CLUSTERFLOW_X:-N}`)."""
    text = (DEPLOY / "local" / "servers.sh").read_text()
    match = re.search(rf"^{name}=\$\{{CLUSTERFLOW_{name}:-(\d+)\}}$", text, re.M)
    assert match, name
    return int(match.group(1))


def test_local_ray_ports_stay_outside_the_other_servers_ranges() -> None:
    """Ray's default worker ports (10002-19999) covered Kafka, PostgreSQL and S3; the
    script gives every Ray port, from a base that keeps them all clear of the others."""
    ray, dashboard = _script_default("RAY_PORT"), _script_default("RAY_DASHBOARD_PORT")
    ray_ports = set(range(ray, ray + 121)) | {dashboard}
    s3_base = _script_default("S3_PORT_BASE")
    others = {_script_default("KAFKA_PORT"), _script_default("KAFKA_CONTROLLER_PORT"), _script_default("PG_PORT"),
              _script_default("S3_PORT"), *range(s3_base, s3_base + 8), s3_base + 7 + 10000}
    assert not ray_ports & others
    assert not ray_ports & set(range(10002, 20000))  # Ray's own defaults, never relied upon
    text = (DEPLOY / "local" / "servers.sh").read_text()
    for flag in ("--min-worker-port", "--max-worker-port", "--node-manager-port", "--object-manager-port",
                 "--dashboard-port", "--disable-usage-stats", "--ray-client-server-port", "--metrics-export-port",
                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"):
        assert flag in text, flag
    assert "ray stop" not in text.replace("never `ray stop`", "")


def _ray_pin() -> str:
    pins = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
            if d.startswith("ray[")]
    assert len(pins) == 1
    return pins[0].split("==")[1]


def test_compose_runs_a_ray_head_and_worker_the_clusterer_submits_to() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    head, worker = services["ray-head"]["command"], services["ray-worker"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head and "--disable-usage-stats" in head
    gcs = next(a.split("=")[1] for a in head if a.startswith("--port="))
    dashboard = next(a.split("=")[1] for a in head if a.startswith("--dashboard-port="))
    assert f"--address=ray-head:{gcs}" in worker and "--head" not in worker
    env = services["clusterer"]["environment"]
    assert env["CLUSTERFLOW_RAY_ADDRESS"] == f"http://ray-head:{dashboard}"
    assert env["CLUSTERFLOW_ENGINE"] in ("auto", "ray")
    # the nodes run clusterflow's image, so a job's tasks import the engine that submitted it
    assert services["ray-head"]["image"] == services["clusterer"]["image"] == services["ray-worker"]["image"]


def test_kuberay_cluster_matches_the_pinned_ray_and_the_clusterers_address() -> None:
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == _ray_pin()
    assert cluster["spec"]["workerGroupSpecs"][0]["replicas"] >= 1
    images = {c["image"] for c in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]}
    clusterer = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "clusterer")
    assert images == {clusterer["spec"]["template"]["spec"]["containers"][0]["image"]}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "clusterflow-config")
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert config["data"]["CLUSTERFLOW_RAY_ADDRESS"] == f"http://{name}-head-svc.{namespace}.svc:8265"
