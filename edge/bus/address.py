"""Where the box broker is: its URL, checked to be local, and why connecting to it failed."""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from edge.errors import ConfigError


@dataclass(frozen=True)
class BusAddress:
    transport: Literal["tcp", "unix"]
    host: str  # IP address, or the socket path for unix
    port: int


def parse_url(url: str) -> BusAddress:
    """``mqtt://127.0.0.1:PORT`` or ``unix:///path.sock``; loopback only (see the edge.bus doc)."""
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path.startswith("/"):
            raise ConfigError("bus.url", [f"{url!r}: a unix socket URL is unix:///absolute/path"])
        return BusAddress("unix", path, 1)  # paho wants a positive port even for unix sockets
    parts, port = urlsplit(url), 1883
    try:
        port = parts.port or port
        loopback = parts.hostname == "localhost" or (
            parts.hostname is not None and ipaddress.ip_address(parts.hostname).is_loopback
        )
    except ValueError:
        loopback = False
    if parts.scheme != "mqtt" or not loopback or parts.path not in ("", "/"):
        raise ConfigError(
            "bus.url",
            [f"{url!r}: the box broker is local: use mqtt://127.0.0.1:PORT or unix:///path.sock"],
        )
    return BusAddress("tcp", parts.hostname or "127.0.0.1", port)


def describe_os_error(exc: OSError) -> str:
    """'Connection refused (ECONNREFUSED)': the words for people, the name for searching."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text
