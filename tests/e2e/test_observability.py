"""Metrics and probes of the running system: after a run, every service's /metrics
counts what it did; the workers' /health and /ready answer on their metrics ports."""
from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import CLUSTERER, consumed_by
from tests.e2e.conftest import wait_for_task
from tests.support.corpus import make_cluster, make_collection, start_run


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_every_service_counts_a_run_and_answers_its_probes(api, stack) -> None:
    collection_id = make_collection(api, groups=3, per_group=30)
    cluster_id = make_cluster(api, collection_id, "kmeans", {"n_clusters": 3})
    task = wait_for_task(api, start_run(api, cluster_id)["task_id"], stack=stack)
    assert task["status"] == "COMPLETED", task

    urls = stack.metrics_urls
    assert set(urls) == {"gateway", "preparer", "clusterer", "labeler", "status"}
    for name, url in urls.items():
        base = url.removesuffix("/metrics")
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200, name
        ready = httpx.get(f"{base}/ready", timeout=10)
        assert ready.status_code == 200, (name, ready.text)

    gateway = scrape(urls["gateway"])
    assert total(gateway, "clusterflow_http_requests_total", route="/v1/clusters/{cluster_id}/execute",
                 status="200") >= 1
    assert total(gateway, "clusterflow_events_published_total", topic="clustering.execution.requested") >= 1

    preparer = scrape(urls["preparer"])
    assert total(preparer, "clusterflow_events_total", service="preparer", outcome="ok",
                 topic="clustering.execution.requested") >= 1
    assert total(preparer, "clusterflow_handler_duration_seconds_count", service="preparer") >= 1

    clusterer = scrape(urls["clusterer"])
    assert total(clusterer, "clusterflow_events_total", service="clusterer", outcome="ok") >= 1
    assert total(clusterer, "clusterflow_algorithm_seconds_count", method="kmeans") >= 1

    status = scrape(urls["status"])
    assert total(status, "clusterflow_events_total", service="status", outcome="ok",
                 topic="clustering.status") >= 1
    assert total(status, "clusterflow_runs", status="COMPLETED") >= 1

    # The lag gauge: measured every 15 s from start; the partitions show up once measured.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lag = [k for k in scrape(urls["clusterer"]) if k[0] == "clusterflow_consumer_lag"]
        if lag:
            break
        time.sleep(1)
    # every topic the clusterer consumes: its runs, and the deferred layouts' commands
    assert lag and {dict(ls)["topic"] for _, ls in lag} == {stack.settings.topic_prefix + t.name
                                                            for t in consumed_by(CLUSTERER)}
    assert stack.settings.topic_prefix + "clustering.layout.compute" in {dict(ls)["topic"] for _, ls in lag}
