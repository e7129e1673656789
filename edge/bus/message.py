"""What travels on the bus: received messages and the payloads we publish."""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any

from edge.errors import CommandError

Payload = bytes | str | dict[str, Any] | list[Any]


@dataclass(frozen=True)
class Message:
    """One message received from the box broker."""

    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        """The payload parsed as JSON; remote input, so errors say what was wrong."""
        try:
            text = self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"message on {self.topic} is not UTF-8 text (bad byte at offset {exc.start}): "
                "send JSON encoded as UTF-8"
            ) from exc
        try:
            return _json.loads(text)
        except _json.JSONDecodeError as exc:
            raise CommandError(
                f"message on {self.topic} is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}"
            ) from exc


def encode_payload(payload: Payload) -> bytes:
    """dict/list → compact UTF-8 JSON, str → UTF-8, bytes as they are."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (dict, list)):
        return _json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raise TypeError(f"cannot publish a {type(payload).__name__}: use bytes, str, dict or list")
