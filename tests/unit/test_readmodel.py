"""The runs read model's shared rules (clusterflow/readmodel.py): a run the gateway
accepted but the projector has not seen reads as the projector's own first shape."""
from __future__ import annotations

from datetime import datetime, timezone

from clusterflow.readmodel import run_from_request, task_row
from contracts.events import IMPORT_MODE, ExecutionRequested
from services.status.projection import new_run

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def request(**options) -> dict:
    return {"run_id": "run_1", "task_id": "task_1", "namespace": "ns", "cluster_id": "clust_1", "options": options,
            "created_at": T0, "canceled_at": None}


def test_an_unprojected_request_is_the_projectors_first_run():
    event = ExecutionRequested(namespace="ns", run_id="run_1", cluster_id="clust_1", task_id="task_1", occurred_at=T0)
    assert run_from_request(request(mode="full")) == new_run(event)
    assert task_row(run_from_request(request())) == task_row(new_run(event))


def test_the_requests_mode_decides_the_task_type_and_the_rest_is_pending():
    row = task_row(run_from_request(request(mode=IMPORT_MODE, id_column="id")))
    assert row["task_type"] == "api_collections_documents_create" and row["additional_data"]["mode"] == IMPORT_MODE
    row = task_row(run_from_request(request(mode="assign")))
    assert row["task_type"] == "engine_cluster_build" and row["additional_data"]["mode"] == "assign"
    assert (row["status"], row["progress"], row["outputs"], row["error"]) == ("PENDING", 0.0, None, None)
    assert row["additional_data"]["stage"] == "queued" and row["additional_data"]["namespace_id"] == "ns"
