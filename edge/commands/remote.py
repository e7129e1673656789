"""Request / reply over the box bus for short-lived CLI commands (`edge sim`, `edge panel`)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from edge.bus import request_once
from edge.bus.identity import Credentials, identity_path, load_credentials
from edge.config import SiteConfig
from edge.errors import BusError, CommandError


def identity_of(cfg: SiteConfig, name: str, *, required: bool = True) -> Credentials | None:
    """The box-bus identity ``name``, or a CommandError saying how to get access to it.

    Not ``required`` and absent: None, and the command connects without identity — which
    only a bare broker (a test bench) admits; the box broker then refuses it with the words
    "not authorised … `sudo edge bus init`". A file that exists but cannot be read (not root,
    not in edge-admin) is always an error."""
    if not required and not identity_path(cfg.bus.identities_dir, name).exists():
        return None
    try:
        return load_credentials(cfg.bus.identities_dir, name)
    except BusError as exc:
        raise CommandError(str(exc)) from None


def ask(
    url: str,
    topic: str,
    body: dict[str, Any],
    reply_prefix: str,
    who: str,
    timeout: float = 5.0,
    credentials: Credentials | None = None,
) -> dict[str, Any]:
    """Send ``body`` with a private reply topic and return the service's JSON answer."""
    reply = f"{reply_prefix}/{uuid.uuid4().hex[:12]}"
    try:
        msg = request_once(
            url,
            topic,
            json.dumps({**body, "reply": reply}),
            reply,
            timeout=timeout,
            credentials=credentials,
        )
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
