"""The :class:`Bus`: public API of the supervised connection to the box broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from edge.bus.connection import Connection, Request, SharedFilter
from edge.bus.message import Payload, encode_payload
from edge.bus.subscription import Subscription
from edge.bus.topics import validate_filter
from edge.errors import BusError
from edge.tasks import within

log = logging.getLogger(__name__)

CLOSE_FLUSH_TIMEOUT = 2.0


class Bus(Connection):
    """A supervised connection to the box broker; see the edge.bus docstring for the design."""

    # -- public API ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def stats(self) -> dict[str, int]:
        """Counters since construction, plus the publishes currently waiting."""
        return {**self._stats, "pending": self._pending}

    async def start(self) -> None:
        """Start the supervised connection; returns at once (see :meth:`wait_connected`)."""
        if self._tasks:
            return
        if self._closing:
            raise BusError(f"the bus to {self.url} was closed; create a new Bus")
        self._loop = asyncio.get_running_loop()
        for name, coro in (("connect", self._supervise()), ("misc", self._misc())):
            task = self._loop.create_task(coro, name=f"bus-{name}[{self.client_id}]")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    async def wait_connected(self, timeout: float | None = None) -> bool:
        if self._connected:
            return True
        try:
            await within(self._connected_evt.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish and wait for the PUBACK (qos ≥ 1) or the write (qos 0).

        While disconnected the message waits (up to ``timeout``) for the connection; messages
        waiting and in flight are bounded by ``queue_size``, beyond which this raises at once.
        """
        data = encode_payload(payload)
        if not topic or "+" in topic or "#" in topic or qos not in (0, 1, 2):
            raise ValueError(f"cannot publish on {topic!r} with qos {qos}: no wildcards, qos 0-2")
        if self._loop is None or self._closing:
            state = "closed" if self._closing else "not started (call start() first)"
            raise BusError(f"the bus to {self.url} is {state}")
        if self._pending >= self._queue_size:
            raise BusError(
                f"{self._pending} messages already wait for the box broker at {self.url} "
                f"(queue_size {self._queue_size}): keep {topic} in the journal and retry later"
            )
        req = Request(topic, data, qos, retain, self._loop.create_future())
        self._pending += 1
        try:
            if self._connected and not self._backlog:
                self._send(req)
            else:
                self._backlog.append(req)
            await within(req.fut, timeout)
        except TimeoutError:
            raise self._timeout_error(req, timeout) from None
        finally:
            self._pending -= 1
            if req.mid is None:
                if req in self._backlog:
                    self._backlog.remove(req)
            elif self._inflight.get(req.mid) is req:
                del self._inflight[req.mid]

    async def publish_many(
        self,
        items: Sequence[tuple[str, Payload]],
        *,
        qos: int = 1,
        timeout: float = 10.0,
        window: int = 100,
    ) -> int:
        """Publish ``items`` in order, up to ``window`` awaiting their PUBACK at once.

        Returns how many of the leading items were acknowledged: the caller can move a
        cursor exactly that far. One PUBACK per round trip would cap a backlog at a few
        thousand messages a second; a window keeps order and multiplies that.
        """
        done = 0
        for start in range(0, len(items), window):
            chunk = items[start : start + window]
            results = await asyncio.gather(
                *(self.publish(t, p, qos=qos, timeout=timeout) for t, p in chunk),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BusError):
                    log.debug("publish_many stopped after %d of %d: %s", done, len(items), result)
                    return done
                if isinstance(result, BaseException):
                    raise result
                done += 1
        return done

    def subscribe(
        self, topic_filter: str, *, qos: int = 1, maxsize: int | None = None
    ) -> Subscription:
        """A bounded stream of the messages matching ``topic_filter``, kept across reconnects."""
        validate_filter(topic_filter)
        sub = Subscription(self, topic_filter, maxsize or self._queue_size)
        entry = self._filters.get(topic_filter)
        if entry is None:
            self._next_sub_id += 1
            entry = SharedFilter(topic_filter, self._next_sub_id, qos, [], asyncio.Event())
            self._filters[topic_filter] = entry
            self._by_sub_id[entry.sub_id] = entry
        elif qos <= entry.qos:
            entry.subs.append(sub)
            return sub
        entry.qos = max(entry.qos, qos)
        entry.subs.append(sub)
        if self._connected:
            self._send_subscribe(entry)
        return sub

    def subscriptions(self) -> list[Subscription]:
        """Every open subscription (a service waits for their acknowledgements before READY)."""
        return [sub for entry in self._filters.values() for sub in entry.subs]

    async def close(self) -> None:
        """Disconnect cleanly (the broker does not send the will) and stop every task."""
        if self._closing:
            return
        self._closing = True
        for entry in list(self._filters.values()):
            for sub in list(entry.subs):
                sub.close()
        if self._connected:
            self._client.disconnect()
            try:
                await within(self._lost.wait(), CLOSE_FLUSH_TIMEOUT)
            except TimeoutError:
                log.warning("the box broker at %s did not see our DISCONNECT in time", self.url)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._drop_socket()
        closed = BusError(f"the bus to {self.url} was closed before the message was sent")
        for req in [*self._backlog, *self._inflight.values()]:
            if not req.fut.done():
                req.fut.set_exception(closed)
        self._backlog.clear()
        self._inflight.clear()

    # -- used by Subscription ----------------------------------------------------------------
    def _unsubscribe(self, sub: Subscription) -> None:
        entry = self._filters.get(sub.topic_filter)
        if entry is None or sub not in entry.subs:
            return
        entry.subs.remove(sub)
        if entry.subs:
            return
        del self._filters[entry.topic_filter]
        del self._by_sub_id[entry.sub_id]
        if self._connected and not self._closing:
            self._client.unsubscribe(entry.topic_filter)

    def _count_drop(self) -> None:
        self._stats["dropped"] += 1

    async def _wait_subscribed(self, topic_filter: str, timeout: float | None) -> bool:
        entry = self._filters.get(topic_filter)
        if entry is None:
            return False
        try:
            await within(entry.acked.wait(), timeout)
        except TimeoutError:
            return False
        return True
