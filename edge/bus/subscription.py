"""The consumer side of a subscription: a bounded queue fed by the bus."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from edge.bus.message import Message
from edge.errors import BusError
from edge.tasks import within

if TYPE_CHECKING:
    from edge.bus.client import Bus

log = logging.getLogger(__name__)


class Subscription:
    """Bounded stream of messages for one filter; when full, the oldest message is dropped."""

    WARN_EVERY = 5.0  # seconds between two "queue full" warnings: the log is bounded too

    def __init__(self, bus: Bus, topic_filter: str, maxsize: int) -> None:
        self.topic_filter = topic_filter
        self.maxsize = maxsize
        self.dropped = 0
        self._bus = bus
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self._closed = False
        self._last_warning = -float("inf")

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        msg = await self._queue.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def get(self, timeout: float | None = None) -> Message:
        """Next message; TimeoutError after ``timeout`` s, BusError once closed."""
        if self._closed:
            raise BusError(f"the subscription to {self.topic_filter} is closed")
        try:
            msg = await within(self._queue.get(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no message on {self.topic_filter} within {timeout:g} s") from None
        if msg is None:
            raise BusError(f"the subscription to {self.topic_filter} is closed")
        return msg

    async def wait_subscribed(self, timeout: float | None = None) -> bool:
        """True once the broker acknowledged the (re-)subscription of the current connection."""
        return await self._bus._wait_subscribed(self.topic_filter, timeout)

    def close(self) -> None:
        """Unsubscribe (when no other Subscription shares the filter) and end iteration."""
        if self._closed:
            return
        self._closed = True
        self._bus._unsubscribe(self)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wakes a consumer blocked in get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deliver(self, msg: Message) -> None:
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._bus._count_drop()
            now = time.monotonic()
            if now - self._last_warning >= self.WARN_EVERY:
                self._last_warning = now
                log.warning(
                    "subscription %s is full (%d messages): dropped the oldest, %d so far; "
                    "its consumer is too slow",
                    self.topic_filter,
                    self.maxsize,
                    self.dropped,
                )
        self._queue.put_nowait(msg)
