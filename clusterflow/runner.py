"""Runs a FastStream service until SIGTERM/SIGINT, with logging configured."""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from faststream import FastStream


def run_service(bootstrap: Callable[[], FastStream]) -> None:
    logging.basicConfig(
        level=os.environ.get("CLUSTERFLOW_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(bootstrap().run())
