"""Keep dnspython out of edge-video until live view needs it.

paho-mqtt imports dnspython when it is installed, for MQTT over DNS SRV records, which the
box never uses: its broker is on loopback or a unix socket. dnspython is installed because
live view needs it (aioice, under aiortc, resolves mDNS candidates with it), and it costs
about 3 MB of private memory in a process that may never open a live session.

So paho is imported while dnspython is hidden, and dnspython is visible again right after:
the first live session imports it as usual. paho then has no SRV lookup, which nothing here
calls. (edge-alarm goes further and keeps OpenSSL out too: see :mod:`edge.alarm.lean`.)
"""

from __future__ import annotations

import sys


def paho_without_dns() -> bool:
    """Import paho with dnspython hidden; False (nothing changed) if either is loaded already."""
    if "paho.mqtt.client" in sys.modules or sys.modules.get("dns") is not None:
        return False
    hidden = "dns" not in sys.modules
    if hidden:
        sys.modules["dns"] = None  # type: ignore[assignment]  # makes `import dns.x` fail
    try:
        import paho.mqtt.client  # noqa: F401
    finally:
        if hidden and sys.modules.get("dns", 0) is None:
            del sys.modules["dns"]
    return True
