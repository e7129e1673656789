"""Does anything listen at the box broker's address? A plain socket, before any MQTT library.

A one-shot command (`edge panel`, `edge sim`) whose broker is not running should say so at
once: importing paho and starting an event loop only to be refused costs more than the rest
of the command on a loaded Pi. The broker is local (loopback TCP or a unix socket), so a
connect is accepted or refused within microseconds; refused twice, ``retry_after_s`` apart,
means it is not running. Anything this module cannot judge (an odd URL) is left to the MQTT
client, which says the same in its own words.
"""

from __future__ import annotations

import errno
import socket
import time
from urllib.parse import urlsplit

RETRY_AFTER_S = 0.1  # refused twice this far apart: not running (a restart's gap is shorter)


def why_not_listening(url: str, retry_after_s: float = RETRY_AFTER_S) -> str | None:
    """Why nothing accepts a connection at ``url`` ('Connection refused (ECONNREFUSED)'),
    or None when something does (or when the URL is not one this module reads).

    Two tries, one sleep apart: on a loaded machine every wake-up waits for a core, so a
    poll loop would cost many times its nominal length."""
    target = _address(url)
    if target is None:
        return None
    problem = _try(*target)
    if problem is None:
        return None
    time.sleep(retry_after_s)
    return _try(*target)


def _address(url: str) -> tuple[int, str | tuple[str, int]] | None:
    if url.startswith("unix://"):
        return socket.AF_UNIX, url[len("unix://") :]
    parts = urlsplit(url)
    try:
        port = parts.port or 1883
    except ValueError:
        return None
    if parts.scheme != "mqtt" or not parts.hostname:
        return None
    family = socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return family, (host, port)


def _try(family: int, address: str | tuple[str, int]) -> str | None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except TimeoutError:
            return None  # something is there, slowly: the MQTT client decides
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0)
            text = exc.strerror or str(exc)
            return f"{text} ({name})" if name else text
    return None
