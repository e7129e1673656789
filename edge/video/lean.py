"""Process settings edge-video applies before it loads anything: less memory for the same work.

dnspython. paho-mqtt imports it when it is installed, for MQTT over DNS SRV records, which
the box never uses: its broker is on loopback or a unix socket. dnspython is installed because
live view needs it (aioice, under aiortc, resolves mDNS candidates with it), and it costs
about 3 MB of private memory in a process that may never open a live session. So paho is
imported while dnspython is hidden, and dnspython is visible again right after: the first
live session imports it as usual. paho then has no SRV lookup, which nothing here calls.

Heaps. glibc gives each thread that allocates its own heap (an arena; up to 8 per core),
and each keeps its freed blocks for reuse. edge-video has a dozen threads (camera readers and
encoders, the default executor where motion analysis moves when it is slow, a writer per clip
being recorded): two arenas shared by all of them (ARENA_MAX) held 12 MB less with motion on
two cameras, for no CPU we could measure. And glibc serves a block of 128 KiB or more with its
own mmap, unmapped when freed, but after the first such free it raises that threshold to the
block's size (up to 32 MiB): from then on, picture-sized buffers (1.4 MB at 720p: a decoder's
frames for a clip's snapshot, an encoder's input) come from a heap and stay there once freed,
so every clip writer thread kept about 10 MB for good. A fixed threshold (MMAP_THRESHOLD)
keeps such buffers out of the heaps; H.264 packets (kilobytes) are not concerned. A site can
still set ``MALLOC_ARENA_MAX`` or ``MALLOC_MMAP_THRESHOLD_`` in the unit's environment: that
setting is then left alone. Figures: bench/video_memory.py and bench/clip_memory.py.
(edge-alarm goes further and keeps OpenSSL out too: see :mod:`edge.alarm.lean`.)
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
ARENA_MAX = 2


def prepare_process() -> None:
    """Both settings, before edge-video imports its bus client and starts threads."""
    paho_without_dns()
    tune_malloc()


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


def tune_malloc() -> list[str]:
    """Fix glibc's arena count and mmap threshold (module docstring); the settings made,
    none where there is no glibc (musl has no mallopt) or the environment sets its own."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt here: the allocator's defaults stay")
        return []
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    made = []
    for env, param, value in (
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ):
        if env not in os.environ and mallopt(param, value) == 1:
            made.append(f"{env}={value}")
    return made
