"""Supervision of a service's background tasks (Python 3.10 has no TaskGroup).

A service is a set of named loops that must all stay alive. If one of them ends or
fails, the others are cancelled and the failure propagates, so the process exits and
systemd restarts it with a clean state: half a service is worse than a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0

T = TypeVar("T")


class TaskEnded(RuntimeError):
    """A loop that should run forever returned."""


async def supervise(loops: dict[str, Coroutine[Any, Any, Any]]) -> None:
    """Run every loop as a named task until one fails or the caller is cancelled."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        failure = _first_failure(done)
    finally:
        await _cancel_all(tasks)
    if failure is not None:
        raise failure


def _first_failure(done: set[asyncio.Task[Any]]) -> BaseException | None:
    """Log what ended (before cancelling the rest, so the cause is never lost)."""
    failure: BaseException | None = None
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is None:
            exc = TaskEnded(f"task {task.get_name()} ended unexpectedly")
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
        failure = failure or exc
    return failure


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=CANCEL_GRACE_S)
    if pending:
        names = ", ".join(t.get_name() for t in pending)
        log.error("tasks did not stop within %.0f s of cancellation: %s", CANCEL_GRACE_S, names)


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` without its Python 3.10 / 3.11 flaw.

    There, if the caller is cancelled at the moment the awaited thing completes, wait_for
    returns the result and the cancellation is lost: a supervised loop then never stops
    (seen here as a service that would not shut down). This raises TimeoutError on timeout
    and always lets a cancellation through; a result that races a cancellation is dropped,
    which is what cancelling means.
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise TimeoutError(f"no result within {timeout} s")
    return task.result()
