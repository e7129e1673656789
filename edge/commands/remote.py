"""Request / reply over the box bus for short-lived CLI commands (`edge sim`, `edge panel`)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from edge.bus import request_once
from edge.errors import BusError, CommandError


def ask(
    url: str, topic: str, body: dict[str, Any], reply_prefix: str, who: str, timeout: float = 5.0
) -> dict[str, Any]:
    """Send ``body`` with a private reply topic and return the service's JSON answer."""
    reply = f"{reply_prefix}/{uuid.uuid4().hex[:12]}"
    try:
        msg = request_once(url, topic, json.dumps({**body, "reply": reply}), reply, timeout=timeout)
    except TimeoutError as exc:
        raise CommandError(
            f"no answer from {who} within {timeout:.0f} s: is it running "
            f"(systemctl status {who}) and connected to {url}?"
        ) from exc
    except BusError as exc:
        raise CommandError(str(exc)) from exc
    answer = msg.json()
    if not isinstance(answer, dict):
        raise CommandError(f"unexpected answer from {who}: {answer!r}")
    return answer
