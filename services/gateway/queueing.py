"""Queuing work behind Kafka: record the request, publish its command, answer at once."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.events import Event
from contracts.topics import Topic
from services.gateway.errors import ApiError


async def enqueue(gw, topic: Topic, event: Event, options: dict[str, Any]) -> datetime:
    """Record the request (so `GET /v1/tasks/{id}` answers PENDING before the projector
    has seen it), then publish; a bus that is away undoes the record and answers 503.
    Returns when the request was recorded."""
    created_at = await gw.repo.record_run_request(run_id=event.run_id, task_id=event.task_id,
                                                  namespace=event.namespace, cluster_id=event.cluster_id,
                                                  options=options)
    try:
        await gw.publisher.publish(topic, event)
    except Exception as exc:
        await gw.repo.forget_run_request(event.run_id)
        raise ApiError(503, "The work could not be queued: the event bus is unavailable; retry shortly",
                       code="event_bus_unavailable", details={"error": str(exc)}) from exc
    return created_at
