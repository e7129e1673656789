"""The `[central]` section: the box broker's bridge to the central station's MQTT broker.

The box opens one outgoing MQTT 5 connection over mutual TLS (works behind NAT and 4G, needs
no inbound port). The central broker knows the site by its client certificate, whose common
name is the site id; the broker's ACL then lets it touch only ``sites/<site id>/#``.

Only file *names* live here: the TLS files sit in the secrets directory, and the private key
is never read by us (mosquitto reads it). Checks, decided once for all secrets:

* a key file that exists must pass the one rule of every secret (edge.secret_files: a regular
  file, not a symbolic link, owned by the edge user or root, mode 0600): otherwise it fails
  validation, so `edge config check` and every service start report it;
* a missing CA, certificate or key file is *not* a configuration error: a configuration is
  often checked on a laptop before the box is provisioned, and mosquitto, started without
  them, keeps the local bus up and retries the bridge until the files appear (it reloads them
  on every attempt). `edge run broker` logs each missing file; the link stays down, which
  edge-alarm reports after ``link_trouble_after_s``.

This module imports neither ssl nor cryptography: edge-alarm loads the configuration and runs
without OpenSSL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.config.models import Strict
from edge.secret_files import secret_problem

SECRETS_DIR = "/etc/edge/secrets"
# Reconnection of the bridge. mosquitto tries again `restart_timeout` after a failure, then
# needs up to 2 s more (it checks bridges once a second, and resolves the address one second
# before it connects): a cap of 10 s brings the link back within 12 s of the central
# broker's return, inside the 15 s promised (measured by tests/test_bridge.py).
RESTART_MIN_S = 2
RESTART_CAP_S = 10
LINK_BACK_WITHIN_S = 15
FILE_PATTERN = r"^\S+$"  # no whitespace: a line break would add lines to mosquitto.conf


class CentralConfig(Strict):
    enabled: bool = Field(
        True, description="Bridge the site's topics to the central broker (false: box only)."
    )
    host: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Central broker host name or IPv4 address; must match its certificate.",
    )
    port: int = Field(8883, ge=1, le=65535, description="Central broker TLS port.")
    secrets_dir: str = Field(
        SECRETS_DIR,
        max_length=255,
        pattern=FILE_PATTERN,
        description="Directory of the relative ca_file, cert_file and key_file paths.",
    )
    ca_file: str = Field(
        "central-ca.crt",
        max_length=255,
        pattern=FILE_PATTERN,
        description="CA certificate(s) that signed the central broker's certificate (PEM).",
    )
    cert_file: str = Field(
        "site.crt",
        max_length=255,
        pattern=FILE_PATTERN,
        description="This site's client certificate (PEM); its common name is the site id.",
    )
    key_file: str = Field(
        "site.key",
        max_length=255,
        pattern=FILE_PATTERN,
        description="Private key of cert_file (PEM, owned by the edge user, mode 0600).",
    )
    tls_version: Literal["tlsv1.2", "tlsv1.3"] = Field(
        "tlsv1.2", description="Oldest TLS version accepted (tlsv1.2 also allows TLS 1.3)."
    )
    keepalive_s: int = Field(
        60,
        ge=5,
        le=3600,
        description="MQTT keepalive of the bridge: the central sees a silent link as down "
        "after 1.5 times this.",
    )
    restart_timeout_min_s: int = Field(
        RESTART_MIN_S,
        ge=1,
        le=RESTART_CAP_S,
        description="Shortest first reconnection delay of the bridge; each box draws its own "
        "between this and restart_timeout_max_s (from its site id), so boxes that lost the "
        "central station together do not all come back in the same second.",
    )
    restart_timeout_max_s: int = Field(
        RESTART_CAP_S,
        ge=1,
        le=RESTART_CAP_S,
        description="Longest reconnection delay (cap of the jittered exponential backoff): "
        f"at most {RESTART_CAP_S} s, so the link is back within {LINK_BACK_WITHIN_S} s of "
        "the central broker's return.",
    )
    max_queued_messages: int = Field(
        10_000,
        ge=100,
        le=1_000_000,
        description="Messages the box broker holds per client while the link is down; "
        "beyond it new QoS 1 messages are dropped (edge-alarm's outbox resends events).",
    )
    max_queued_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024 * 1024,
        le=1024 * 1024 * 1024,
        description="Bytes the box broker holds per client while the link is down.",
    )
    cleansession: bool = Field(
        False,
        description="false: the bridge keeps its session, so messages queued while the link "
        "is down survive a reconnection and a broker restart.",
    )
    link_trouble_after_s: int = Field(
        120,
        ge=10,
        le=86_400,
        description="edge-alarm reports a transmission-path trouble when the bridge has been "
        "down this long.",
    )

    @model_validator(mode="after")
    def _checks(self) -> CentralConfig:
        if self.restart_timeout_min_s > self.restart_timeout_max_s:
            raise ValueError(
                f"restart_timeout_min_s ({self.restart_timeout_min_s}) is above "
                f"restart_timeout_max_s ({self.restart_timeout_max_s}): lower the first"
            )
        problem = secret_problem(self.key_path(), missing_ok=True)  # missing: see above
        if problem:
            raise ValueError(f"key_file: {problem}")
        return self

    def _secret(self, name: str) -> Path:
        return Path(self.secrets_dir, name)  # an absolute name replaces the directory

    def ca_path(self) -> Path:
        return self._secret(self.ca_file)

    def cert_path(self) -> Path:
        return self._secret(self.cert_file)

    def key_path(self) -> Path:
        return self._secret(self.key_file)

    def tls_paths(self) -> dict[str, Path]:
        """The three TLS files by their key in the configuration."""
        return {
            "ca_file": self.ca_path(),
            "cert_file": self.cert_path(),
            "key_file": self.key_path(),
        }


def missing_files(cfg: CentralConfig) -> list[str]:
    """One line per TLS file that is absent or unreadable, naming the key and the fix."""
    problems = []
    for key, path in cfg.tls_paths().items():
        if not path.is_file():
            problems.append(
                f"central.{key}: {path} does not exist: install it (see docs/bridge.md)"
            )
        elif not _readable(path):
            problems.append(f"central.{key}: {path} cannot be read: chown it to the edge user")
    return problems


def _readable(path: Path) -> bool:
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


__all__ = [
    "LINK_BACK_WITHIN_S",
    "RESTART_CAP_S",
    "RESTART_MIN_S",
    "SECRETS_DIR",
    "CentralConfig",
    "missing_files",
]
