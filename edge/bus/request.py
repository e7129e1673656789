"""Request / reply between two running services over the box bus.

The reply topic is private to one request (it carries a fresh token), so concurrent requests
never see each other's answers, and the subscription exists before the request is published,
so a fast answer cannot be missed. Used where one service asks another to act and must tell
its own caller the outcome (edge-alarm asking edge-video to open a live session, edge-video
asking edge-alarm to switch an output from a live session).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from edge.bus.client import Bus
from edge.bus.message import Message, Payload
from edge.errors import BusError

SUBSCRIBE_S = 2.0


def reply_topic(base: str) -> str:
    """``<base>/<token>``: where one request's answer is expected."""
    return f"{base}/{secrets.token_hex(8)}"


async def request(
    bus: Bus,
    topic: str,
    payload: dict[str, Any],
    *,
    reply_base: str,
    timeout: float,
) -> Message:
    """Publish ``payload`` with a ``reply`` field, return the first answer on that topic.

    Raises BusError when the broker cannot take the request and TimeoutError when nobody
    answers within ``timeout`` (the other service is down or busy): the caller says so to
    its own caller, it never guesses the outcome.
    """
    deadline = time.monotonic() + timeout
    reply = reply_topic(reply_base)
    with bus.subscribe(reply, maxsize=4) as sub:
        if not await sub.wait_subscribed(min(SUBSCRIBE_S, timeout)):
            raise BusError(f"could not subscribe to {reply} on the box bus")
        body: Payload = {**payload, "reply": reply}
        await bus.publish(topic, body, timeout=max(0.1, deadline - time.monotonic()))
        try:
            return await sub.get(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise TimeoutError(f"no answer on {reply} within {timeout:g} s") from None
