"""What the rest of the box sees of live view: refusals and the hub's interface.

Kept apart from the hub so that the web server and the tele-action code depend on a small,
stable surface rather than on the WebRTC machinery.
"""

from __future__ import annotations

from typing import Any, Protocol

from edge.errors import EdgeError

# Why a live request was refused; the central console and the web page key off these codes.
REFUSAL_CODES = (
    "disabled",  # live view is off on this box
    "unknown_camera",
    "viewer_cap",  # the camera already has its maximum number of viewers
    "policy",  # outside the site's access policy (CNIL proportionality)
    "bad_offer",  # the SDP offer cannot be used
    "unknown_session",
    "unauthorised",
    "busy",  # edge-video did not answer in time
)


class LiveRefused(EdgeError):
    """A live request that is not carried out; ``reason`` is a sentence for the operator."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LiveHubApi(Protocol):
    """The hub as the local web server (WHEP) uses it."""

    def describe(self) -> dict[str, Any]:
        """``{"site", "cameras": [{"id", "name", "up", "viewers", "cap"}], "outputs": [...]}``."""
        ...

    async def open_lan(
        self, camera: str, offer_sdp: str, *, user: str, remote: str
    ) -> tuple[str, str]:
        """Answer a WHEP offer: ``(session id, answer SDP)``; raises LiveRefused."""
        ...

    async def close(self, session: str, why: str) -> bool:
        """End a session; False when it does not exist (any more)."""
        ...

    def refused(
        self, camera: str, operator: str, exc: LiveRefused, *, via: Any, remote: str = ""
    ) -> None:
        """Put a refused request in the audit trail."""
        ...

    def session_owner(self, session: str) -> tuple[str, str] | None:
        """``(camera, operator)`` of a session (``lan:<user>`` for the LAN), None if unknown."""
        ...

    def audit(self, body: dict[str, Any]) -> None:
        """Report an audit row of the web server (the refused-login summaries) for the
        journal; ``body`` is a ``refused`` report as :meth:`refused` makes."""
        ...
