"""Keep OpenSSL out of the edge-alarm process.

edge-alarm never speaks TLS: its broker is on loopback or a unix socket, and TLS to the
central station is the box broker's bridge. Yet asyncio and paho import ``ssl`` when they
can, and ``hashlib`` loads OpenSSL's libcrypto for SHA-256, which together cost about 4.5 MB
of resident memory — over a tenth of the service's 40 MB budget on a Pi. Marking those
modules unavailable before anything imports them makes asyncio and paho run without TLS
(both support that) and hashlib use CPython's built-in SHA-256, which gives identical
digests.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

BLOCKED = ("ssl", "_ssl", "_hashlib")


def without_openssl() -> bool:
    """Block OpenSSL-backed modules; False (and nothing changed) if one is already loaded."""
    loaded = [name for name in (*BLOCKED, "hashlib") if sys.modules.get(name) is not None]
    if loaded:
        log.debug("OpenSSL already loaded through %s; running with it", ", ".join(loaded))
        return False
    for name in BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]
    return True
