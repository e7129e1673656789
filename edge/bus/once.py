"""One-shot helpers for short-lived CLI commands: connect, do one thing, disconnect.

A person is waiting at the other end, so they fail fast and quietly. The box broker is local
(loopback or a unix socket): it answers a connect at once or refuses it at once, so a broker
that has refused us for ``CONNECT_S`` is not running, and waiting longer only delays the
error. While the command runs, the bus's own log of each failed attempt is silenced: the
error raised says it once, in words, and the caller adds how to start the broker here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence

from edge.bus.client import Bus
from edge.bus.identity import Credentials
from edge.bus.message import Message, Payload
from edge.bus.subscription import Subscription
from edge.errors import BusError, EdgeError

CONNECT_S = 0.15  # refused this long: the broker is not running
POLL_S = 0.02
DRAIN_S = 0.005  # a message already queued is taken in one loop turn
SUBSCRIBED_S = 1.0  # the broker acknowledges a subscription within this, or it is not well


class BrokerUnreachable(BusError):
    """Nothing accepts a connection at the box broker's address (it is not running)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"cannot reach the box broker at {url}: {reason}; is edge-broker running?")


class BrokerRefused(BusError):
    """The box broker answered and refused us (identity, password, ACL): retrying cannot help."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"the box broker at {url} refused the connection: {reason}")


class ServiceDown(EdgeError, TimeoutError):
    """The service's own retained status says it is not running: no answer will come."""


@dataclasses.dataclass
class Exchange:
    """A reply and the retained messages read on the same connection."""

    reply: Message
    retained: dict[str, Message]


# Given the retained messages seen once subscribed: why the service cannot answer, or None.
DownCheck = Callable[[dict[str, Message]], str | None]


def publish_once(
    url: str,
    topic: str,
    payload: Payload,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout: float = 5.0,
    credentials: Credentials | None = None,
) -> None:
    """Connect, publish, wait for the PUBACK, disconnect. Not for use inside a running loop."""

    async def main() -> None:
        bus = Bus(url, _cli_client_id(), credentials=credentials)
        try:
            await _connect(bus, timeout)
            await bus.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        finally:
            await bus.close()

    with quiet_bus():
        asyncio.run(main())


def request_once(
    url: str,
    topic: str,
    payload: Payload,
    reply_topic: str,
    timeout: float = 5.0,
    credentials: Credentials | None = None,
) -> Message:
    """Subscribe to ``reply_topic``, publish, return the first message on it.

    The first message may be a retained one (that is how a caller waits for a retained status);
    command replies should therefore not be retained. Raises BusError when the broker cannot be
    reached and TimeoutError when nothing answers within ``timeout``.
    """
    return exchange_once(url, topic, payload, reply_topic, timeout, credentials).reply


def exchange_once(
    url: str,
    topic: str,
    payload: Payload,
    reply_topic: str,
    timeout: float = 5.0,
    credentials: Credentials | None = None,
    *,
    retained: Sequence[str] = (),
    down: DownCheck | None = None,
) -> Exchange:
    """:func:`request_once`, also reading the ``retained`` topics on the same connection.

    ``down`` looks at those retained messages before the request is sent: a reason from it
    (the service's status says it stopped) raises :class:`ServiceDown` at once instead of
    waiting ``timeout`` for an answer that cannot come.
    """
    return _exchange(url, reply_topic, timeout, credentials, (topic, payload), retained, down)


def receive_once(
    url: str, topic_filter: str, timeout: float = 5.0, credentials: Credentials | None = None
) -> Message:
    """The first message on ``topic_filter`` (a retained one at once): waits without
    publishing anything, which an identity allowed only to read can do."""
    return _exchange(url, topic_filter, timeout, credentials, None, (), None).reply


@contextlib.contextmanager
def quiet_bus() -> Iterator[None]:
    """Silence the bus's warnings (one per failed connection attempt) for a one-shot command:
    the error it ends with says the same once. Errors (a bug) still show."""
    logger = logging.getLogger("edge.bus")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _exchange(
    url: str,
    topic_filter: str,
    timeout: float,
    credentials: Credentials | None,
    request: tuple[str, Payload] | None,
    retained: Sequence[str],
    down: DownCheck | None,
) -> Exchange:
    """Subscribe (``retained`` first), publish ``request`` if any, return the first message
    on ``topic_filter`` with the retained messages seen."""

    async def main() -> Exchange:
        deadline = time.monotonic() + timeout
        bus = Bus(url, _cli_client_id(), credentials=credentials)
        # Subscribed in this order on connect: the broker sends a filter's retained messages
        # right after its SUBACK, so once the last SUBACK is in, every retained one is too.
        watched = {t: bus.subscribe(t, maxsize=4) for t in retained}
        sub = bus.subscribe(topic_filter, maxsize=16)
        try:
            await _connect(bus, timeout)
            seen: dict[str, Message] = {}
            if watched:
                await sub.wait_subscribed(min(SUBSCRIBED_S, timeout))
                seen = await _drain(watched)
                reason = down(seen) if down is not None else None
                if reason:
                    raise ServiceDown(reason)
            if request is not None:
                left = max(0.0, deadline - time.monotonic())
                await bus.publish(request[0], request[1], timeout=left)
            try:
                reply = await sub.get(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"nothing on {topic_filter} within {timeout:g} s") from None
            return Exchange(reply, seen)
        finally:
            await bus.close()

    with quiet_bus():
        return asyncio.run(main())


async def _drain(watched: dict[str, Subscription]) -> dict[str, Message]:
    """The newest message already received on each watched filter (none waited for)."""
    seen: dict[str, Message] = {}
    for name, sub in watched.items():
        while True:
            try:
                seen[name] = await sub.get(timeout=DRAIN_S)
            except (TimeoutError, BusError):
                break
    return seen


def _cli_client_id() -> str:
    return f"edge-cli-{os.getpid()}-{secrets.token_hex(3)}"


async def _connect(bus: Bus, timeout: float) -> None:
    """Connected within ``timeout``, or the reason now: refused for ``CONNECT_S`` (nothing
    listens) or refused by the broker (who we are). A broker that accepted the socket but is
    slow to answer gets the whole ``timeout``."""
    await bus.start()
    start = time.monotonic()
    while not bus.connected:
        waited = time.monotonic() - start
        error = bus.last_error or ""
        if error.startswith("the broker refused"):
            raise BrokerRefused(bus.url, error.removeprefix("the broker refused the connection: "))
        listening = not error  # the socket is open and the CONNACK is on its way
        if waited >= timeout or (waited >= min(CONNECT_S, timeout) and not listening):
            raise BrokerUnreachable(bus.url, error or "no answer")
        await bus.wait_connected(POLL_S)
