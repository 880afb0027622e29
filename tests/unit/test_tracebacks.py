"""A failed run's traceback: cut to its last part, and carried on the FAILED report."""
from __future__ import annotations

import pytest

from clusterflow.messaging import Consumer, RunFailed, short_traceback
from clusterflow.settings import Settings
from contracts.api import TaskStatusEnum
from contracts.events import TRACEBACK_MAX_CHARS, ExecutionRequested, RunStatusChanged
from contracts.topics import EXECUTION_REQUESTED
from tests.fakes import RecordingPublisher
from tests.unit.test_consumer_retries import BODY


def _deep(n: int) -> None:
    if n == 0:
        _innermost_failure()
    _deeper(n - 1)  # alternating frames: Python does not fold them as it folds a repeated one


def _deeper(n: int) -> None:
    _deep(n)


def _innermost_failure() -> None:
    raise ValueError("the engine refused " + "x" * 50)


def _caught(fn, *args) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("did not raise")


def test_a_short_traceback_is_kept_whole():
    exc = _caught(_deep, 2)
    text = short_traceback(exc)
    assert text.startswith("Traceback (most recent call last):")
    assert "_innermost_failure" in text and text.rstrip().endswith("ValueError: the engine refused " + "x" * 50)


def test_a_long_traceback_keeps_its_last_frames_within_the_limit():
    exc = _caught(_deep, 400)
    text = short_traceback(exc)
    assert len(text) <= TRACEBACK_MAX_CHARS
    assert text.startswith("... (earlier frames cut)\n")
    assert "_innermost_failure" in text and "ValueError: the engine refused" in text
    assert "Traceback (most recent call last)" not in text  # the start is what was cut
    # cut at a line: the line after the marker is a whole one
    assert text.splitlines()[1].startswith(("  File ", "    "))
    assert len(short_traceback(exc, limit=500)) <= 500


def test_a_cause_is_included():
    def wraps():
        try:
            _innermost_failure()
        except ValueError as exc:
            raise RunFailed(f"clustering failed: {exc}") from exc

    text = short_traceback(_caught(wraps))
    assert "_innermost_failure" in text and "RunFailed: clustering failed" in text
    assert "direct cause" in text


def _consumer(handler, out) -> Consumer:
    return Consumer(topic=EXECUTION_REQUESTED, group_id="g", service="svc", handler=handler, publisher=out,
                    settings=Settings(max_attempts=2, retry_backoff_s=0.001))


@pytest.mark.parametrize("error", [RunFailed("no documents match"), OSError("Postgres is away")])
async def test_the_failed_report_carries_the_handlers_traceback(error):
    async def the_failing_handler(event: ExecutionRequested) -> None:
        raise error

    out = RecordingPublisher()
    await _consumer(the_failing_handler, out).process(BODY)
    [failed] = out.of(RunStatusChanged)
    assert failed.status is TaskStatusEnum.FAILED
    assert "the_failing_handler" in failed.error_traceback and type(error).__name__ in failed.error_traceback
    assert RunStatusChanged.model_validate_json(failed.model_dump_json()).error_traceback == failed.error_traceback
