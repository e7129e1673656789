"""Live view (`[live]`) and the box's local web server (`[web]`) in site.toml.

Live view is personal-data processing under a proportionality rule (CNIL): the default
policy lets the central station look only in the minutes that follow an alarm, and every
session, granted or refused, is journaled. ICE servers default to none, so a box never asks
a public STUN server anything unless the installer configured one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge.config.models import Strict

ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


class IceServer(Strict):
    urls: list[str] = Field(
        min_length=1,
        max_length=4,
        description="stun:, stuns:, turn: or turns: URLs of one server "
        "(e.g. turn:turn.example.net:3478?transport=udp).",
    )
    username: str | None = Field(
        None, max_length=128, description="Static TURN user name (with credential_file)."
    )
    credential_file: str | None = Field(
        None,
        max_length=255,
        description="File holding the static TURN password (mode 0600; never in site.toml).",
    )
    credential: str | None = Field(
        None,
        max_length=256,
        description="Not accepted: a password inline in site.toml; use credential_file.",
    )
    rest_secret_file: str | None = Field(
        None,
        max_length=255,
        description="TURN REST shared secret (coturn use-auth-secret): the box derives "
        "time-limited credentials from it for itself and for each viewer it grants.",
    )
    rest_ttl_s: int = Field(
        3600, ge=60, le=86_400, description="Lifetime of TURN REST credentials."
    )

    @model_validator(mode="after")
    def _shape(self) -> IceServer:
        for url in self.urls:
            if not url.startswith(ICE_SCHEMES):
                raise ValueError(
                    f"ICE server URL {url!r} must start with one of {', '.join(ICE_SCHEMES)}"
                )
        if self.credential is not None:
            raise ValueError(
                "credential holds a password inline in site.toml: put it in a file (mode "
                "0600, e.g. /etc/edge/secrets/turn-password) and give credential_file instead"
            )
        turn = any(u.startswith(("turn:", "turns:")) for u in self.urls)
        static = self.username is not None or self.credential_file is not None
        if static and (self.username is None or self.credential_file is None):
            raise ValueError("give both username and credential_file for a static TURN account")
        if static and self.rest_secret_file:
            raise ValueError("give either username/credential_file or rest_secret_file, not both")
        if turn and not (static or self.rest_secret_file):
            raise ValueError(
                "a TURN server needs username and credential_file, or rest_secret_file "
                "(TURN REST shared secret)"
            )
        if not turn and (static or self.rest_secret_file):
            raise ValueError("credentials only apply to turn: or turns: URLs")
        return self


class LiveAudio(Strict):
    listen_in: bool = Field(
        False,
        description="Send the box microphone to viewers (Opus); off unless the site allows it.",
    )
    talk_down: bool = Field(
        False, description="Play the operator's audio on the box speaker (one talker at a time)."
    )
    microphone: str = Field(
        "default", max_length=255, description="Capture device (ALSA name, e.g. hw:1,0)."
    )
    speaker: str = Field(
        "default", max_length=255, description="Playback device (ALSA name, e.g. plughw:0,0)."
    )
    device_format: str | None = Field(
        "alsa",
        max_length=32,
        description="PyAV/FFmpeg format of both devices; empty or null to open them as files "
        "(used by tests and for a recorded message).",
    )


class LiveActions(Strict):
    outputs: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Outputs an operator may switch from a live session (data channel "
        "`actions`); none: tele-actions are refused.",
    )
    ptz: bool = Field(
        True, description="Allow PTZ presets on cameras that have an [video.cameras.onvif] block."
    )


class LiveConfig(Strict):
    enabled: bool = Field(True, description="Offer live view (central station and LAN).")
    policy: Literal["always", "after_alarm", "incident"] = Field(
        "after_alarm",
        description="When the central station may look: always; after_alarm: within "
        "window_minutes after an alarm or tamper event; incident: while a partition holds "
        "an alarm not yet cleared by a disarm, and window_minutes after.",
    )
    window_minutes: int = Field(
        15, ge=1, le=1440, description="Minutes after an alarm during which live view is allowed."
    )
    viewers_per_camera: int = Field(
        4, ge=1, le=16, description="Simultaneous viewers of one camera (one capture feeds all)."
    )
    idle_timeout_s: int = Field(
        30,
        ge=5,
        le=600,
        description="A session whose viewer is not connected (no offer, link lost) for this "
        "long is closed.",
    )
    max_session_s: int = Field(
        600, ge=30, le=7200, description="Hard limit of one session; the operator asks again."
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        max_length=4,
        description="STUN / TURN servers; none: host candidates only, no external request.",
    )
    audio: LiveAudio = Field(default_factory=LiveAudio, description="Listen-in and talk-down.")
    actions: LiveActions = Field(
        default_factory=LiveActions, description="Tele-actions during a live session."
    )


class WebConfig(Strict):
    enabled: bool = Field(True, description="Run the local web server (WHEP live view on the LAN).")
    listen: str = Field(
        "127.0.0.1",
        max_length=64,
        description="Address the local web server binds: loopback by default; the installer "
        "sets the box's LAN address (0.0.0.0 only if every interface must serve it).",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the local web server.")
    https: bool = Field(
        True,
        description="Serve HTTPS with the box's own certificate (made at first start, "
        "fingerprint shown by `edge web cert`) or tls_cert/tls_key; false: plain HTTP, which "
        "sends passwords in clear (for a loopback-only demo).",
    )
    credentials_file: str = Field(
        "/etc/edge/secrets/web-users",
        max_length=255,
        description="Per-box user file written by `edge web passwd USER` (a relative path is "
        "taken from the configuration file's directory); while it is missing or empty every "
        "request is refused (there is no default password). The box's own certificate "
        "(web-tls.pem) is kept beside it.",
    )
    tls_cert: str | None = Field(
        None,
        max_length=255,
        description="PEM certificate of the site's own (with tls_key) instead of the box's.",
    )
    tls_key: str | None = Field(
        None, max_length=255, description="PEM private key of tls_cert (a secret file, 0600)."
    )
    max_failures_per_minute: int = Field(
        10, ge=1, le=1000, description="Failed logins per client address before it waits."
    )
    max_failures_per_minute_total: int = Field(
        30,
        ge=1,
        le=10_000,
        description="Failed logins from all addresses together before every address that "
        "has not logged in before waits (stops guessing from rotating addresses).",
    )
    user_backoff_max_s: int = Field(
        900,
        ge=1,
        le=86_400,
        description="Longest wait of a user name after repeated failures (2, 4, 8 … s from "
        "its 5th failure within 15 minutes).",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls_cert is not None and not self.https:
            raise ValueError("tls_cert and tls_key need https = true (or remove them)")
        return self


def live_problems(live: LiveConfig, outputs: set[str]) -> list[str]:
    """Cross-section rules: tele-action outputs must exist."""
    return [
        f"live.actions.outputs names {o!r}, which is not an output: add [[outputs]] id = "
        f"{o!r} or remove it"
        for o in live.actions.outputs
        if o not in outputs
    ]
