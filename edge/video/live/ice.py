"""ICE servers for live sessions: the box's own, and the ones a granted viewer is told to use.

No server configured means host candidates only and not a single packet to a public STUN
server (aiortc would otherwise default to Google's: we always pass an explicit list).

TURN REST credentials follow the coturn ``use-auth-secret`` scheme: user name
``<expiry unix time>:<name>``, password ``base64(HMAC-SHA1(secret, user name))``. The box
derives them for itself and for each viewer it grants, so no long-lived TURN password is
ever sent to a console.

aiortc is imported by :func:`rtc_configuration` only, when a session negotiates: the hub
mints a grant's servers without loading WebRTC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config.live import IceServer, LiveConfig
from edge.secret_files import SecretFileError, read_secret

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

log = logging.getLogger(__name__)


def turn_rest_credentials(secret: bytes, name: str, ttl_s: int, now: float) -> tuple[str, str]:
    """``(username, credential)`` valid until ``now + ttl_s``."""
    username = f"{int(now) + ttl_s}:{name}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def _secret(server: IceServer, path: str, key: str) -> bytes | None:
    """The stripped bytes of a TURN secret file (edge.secret_files rules), None if unusable."""
    try:
        secret = read_secret(Path(path), f"live.ice_servers {key}").strip()
    except SecretFileError as exc:
        log.warning("TURN server %s skipped: %s", server.urls[0], exc)
        return None
    if not secret:
        log.warning("TURN server %s skipped: %s is empty", server.urls[0], path)
        return None
    return secret


def ice_servers(live: LiveConfig, name: str, now: float | None = None) -> list[dict[str, Any]]:
    """The configured servers as W3C RTCIceServer dictionaries, TURN REST credentials minted."""
    now = time.time() if now is None else now
    out: list[dict[str, Any]] = []
    for server in live.ice_servers:
        entry: dict[str, Any] = {"urls": list(server.urls)}
        if server.rest_secret_file:
            secret = _secret(server, server.rest_secret_file, "rest_secret_file")
            if secret is None:
                continue
            entry["username"], entry["credential"] = turn_rest_credentials(
                secret, name, server.rest_ttl_s, now
            )
        elif server.username is not None and server.credential_file is not None:
            password = _secret(server, server.credential_file, "credential_file")
            if password is None:
                continue
            entry["username"] = server.username
            entry["credential"] = password.decode("utf-8", errors="replace")
        out.append(entry)
    return out


def rtc_configuration(servers: list[dict[str, Any]]) -> RTCConfiguration:
    """aiortc's configuration for the box's side; an empty list means host candidates only."""
    from aiortc import RTCConfiguration, RTCIceServer

    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in servers
        ]
    )
