"""Keep OpenSSL out of the edge-alarm process.

edge-alarm never speaks TLS: its broker is on loopback or a unix socket, and TLS to the
central station is the box broker's bridge. Yet asyncio and paho import ``ssl`` when they
can, and ``hashlib`` loads OpenSSL's libcrypto for SHA-256, which together cost about 4.5 MB
of resident memory — over a tenth of the service's 40 MB budget on a Pi. Marking those
modules unavailable before anything imports them makes asyncio and paho run without TLS
(both support that) and hashlib use CPython's built-in SHA-256, which gives identical
digests.

paho has one non-TLS code path that still names ``ssl``: the ``except ssl.SSLWantReadError``
clauses around every socket read and write. With ``ssl`` missing, a spurious read wake-up
(EAGAIN) would raise AttributeError there, so paho is given a stand-in that only holds those
two exception classes (which plain sockets never raise).
"""

from __future__ import annotations

import logging
import sys
import types

log = logging.getLogger(__name__)

# dnspython (a dependency of live view's ICE) is imported by paho when installed, for MQTT
# over DNS SRV records, which the box never uses: about 3 MB edge-alarm does not need.
BLOCKED = ("ssl", "_ssl", "_hashlib", "dns")


def without_openssl() -> bool:
    """Block OpenSSL-backed modules; False (and nothing changed) if one is already loaded."""
    loaded = [name for name in (*BLOCKED, "hashlib") if sys.modules.get(name) is not None]
    if loaded:
        log.debug("OpenSSL already loaded through %s; running with it", ", ".join(loaded))
        return False
    for name in BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]
    import paho.mqtt.client as paho_client

    if paho_client.ssl is None:
        paho_client.ssl = _plain_socket_ssl()
    return True


def _plain_socket_ssl() -> types.SimpleNamespace:
    class SSLWantReadError(OSError):
        """Never raised by a plain socket."""

    class SSLWantWriteError(OSError):
        """Never raised by a plain socket."""

    return types.SimpleNamespace(
        SSLWantReadError=SSLWantReadError, SSLWantWriteError=SSLWantWriteError
    )
