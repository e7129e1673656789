"""One-shot helpers for short-lived CLI commands: connect, do one thing, disconnect."""

from __future__ import annotations

import asyncio
import os
import secrets
import time

from edge.bus.client import Bus
from edge.bus.identity import Credentials
from edge.bus.message import Message, Payload
from edge.errors import BusError


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
        bus = await _connected_bus(url, timeout, credentials)
        try:
            await bus.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        finally:
            await bus.close()

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
    return _first(url, reply_topic, timeout, credentials, (topic, payload))


def receive_once(
    url: str, topic_filter: str, timeout: float = 5.0, credentials: Credentials | None = None
) -> Message:
    """The first message on ``topic_filter`` (a retained one at once): waits without
    publishing anything, which an identity allowed only to read can do."""
    return _first(url, topic_filter, timeout, credentials, None)


def _first(
    url: str,
    topic_filter: str,
    timeout: float,
    credentials: Credentials | None,
    request: tuple[str, Payload] | None,
) -> Message:
    """Subscribe, publish ``request`` if any, return the first message on ``topic_filter``."""

    async def main() -> Message:
        deadline = time.monotonic() + timeout
        bus = Bus(url, _cli_client_id(), credentials=credentials)
        sub = bus.subscribe(topic_filter, maxsize=16)
        try:
            await _connect(bus, timeout)
            if request is not None:
                left = max(0.0, deadline - time.monotonic())
                await bus.publish(request[0], request[1], timeout=left)
            try:
                return await sub.get(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"nothing on {topic_filter} within {timeout:g} s") from None
        finally:
            await bus.close()

    return asyncio.run(main())


def _cli_client_id() -> str:
    return f"edge-cli-{os.getpid()}-{secrets.token_hex(3)}"


async def _connected_bus(url: str, timeout: float, credentials: Credentials | None) -> Bus:
    bus = Bus(url, _cli_client_id(), credentials=credentials)
    try:
        await _connect(bus, timeout)
    except BaseException:
        await bus.close()
        raise
    return bus


async def _connect(bus: Bus, timeout: float) -> None:
    """Retries until ``timeout`` (the broker may be starting), then names the last reason."""
    await bus.start()
    if not await bus.wait_connected(timeout):
        raise BusError(
            f"cannot reach the box broker at {bus.url}: {bus.last_error or 'no answer'}; "
            "is edge-broker running?"
        )
