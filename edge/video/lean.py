"""Process settings edge-video applies before it loads anything: less memory for the same work.

dnspython. paho-mqtt imports it when it is installed, for MQTT over DNS SRV records, which
the box never uses: its broker is on loopback or a unix socket. dnspython is installed because
live view needs it (aioice, under aiortc, resolves mDNS candidates with it), and it costs
about 3 MB of private memory in a process that may never open a live session. So paho is
imported while dnspython is hidden, and dnspython is visible again right after: the first
live session imports it as usual. paho then has no SRV lookup, which nothing here calls.

Large blocks. glibc serves a block of 128 KiB or more with its own mmap and unmaps it when it
is freed, but after the first such free it raises that threshold to the block's size (up to
32 MiB): from then on, picture-sized buffers (1.4 MB at 720p: a decoder's frames for a clip's
snapshot, a muxer's fragment) come from the heap of the thread that asked and stay there once
freed, so every clip writer thread kept about 10 MB for good. A fixed threshold
(MMAP_THRESHOLD) keeps such buffers out of the heaps; the packets of H.264 video (kilobytes)
are not concerned. A site can still set ``MALLOC_MMAP_THRESHOLD_`` in the unit's environment:
it is then left alone. (edge-alarm goes further and keeps OpenSSL out too: see
:mod:`edge.alarm.lean`.)
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 256 * 1024


def prepare_process() -> None:
    """Both settings, before edge-video imports its bus client and starts threads."""
    paho_without_dns()
    fixed_mmap_threshold()


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


def fixed_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold; False where there is no glibc or the site set its own."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only (musl has no mallopt)
    except (OSError, AttributeError):
        log.debug("no mallopt here: glibc's default mmap threshold stays")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
