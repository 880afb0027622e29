"""The clusterer compiles UMAP's numba code at start, in a thread of its own."""
from __future__ import annotations

import logging
import threading

from services.clusterer.app import WARM_UP_DONE, start_warm_up


def test_the_warm_up_runs_in_a_daemon_thread_and_says_when_it_is_done(caplog):
    ran = []
    caplog.set_level(logging.INFO, logger="clusterflow.clusterer")
    thread = start_warm_up(lambda: ran.append(threading.current_thread().name))
    thread.join(timeout=10)
    assert thread.daemon and ran == ["numba-warm-up"]
    assert any(WARM_UP_DONE in r.getMessage() for r in caplog.records)


def test_a_failed_warm_up_is_logged_not_raised(caplog):
    def broken() -> None:
        raise RuntimeError("no compiler today")

    caplog.set_level(logging.INFO, logger="clusterflow.clusterer")
    thread = start_warm_up(broken)
    thread.join(timeout=10)
    assert not thread.is_alive()
    messages = [r.getMessage() for r in caplog.records]
    assert any("warm-up failed" in m for m in messages) and not any(WARM_UP_DONE in m for m in messages)
