"""Supervision of a service's background tasks (Python 3.10 has no TaskGroup).

A service is a set of named loops that must all stay alive. If one of them ends or
fails, the others are cancelled and the failure propagates, so the process exits and
systemd restarts it with a clean state: half a service is worse than a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskEnded(RuntimeError):
    """A loop that should run forever returned."""


async def supervise(loops: dict[str, Coroutine[Any, Any, Any]]) -> None:
    """Run every loop as a named task until one fails or the caller is cancelled."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed: %r", task.get_name(), exc)
            raise exc
        raise TaskEnded(f"task {task.get_name()} ended unexpectedly")
