"""The gateway's /ready against the real servers: 200 when all answer, 503 naming S3
when its endpoint is wrong (a second gateway app, the shared servers untouched)."""
from __future__ import annotations

from fastapi.testclient import TestClient

from clusterflow.stack import free_port
from services.gateway.app import create_app


def test_ready_names_s3_when_its_endpoint_is_wrong(settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").json() == {"status": "ready"}
        assert "clusterflow_http_requests_total" in client.get("/metrics").text

    bad = settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{free_port()}"})
    with TestClient(create_app(bad)) as client:
        assert client.get("/health").status_code == 200
        r = client.get("/ready")
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["message"] == "Not ready: s3" and error["code"] == "not_ready", error
        assert set(error["details"]) == {"s3"}, error
