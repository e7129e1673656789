"""Bounded connections for the local web server: caps, read deadlines, TLS handshake limits.

Why not aiohttp's own limits alone: aiohttp bounds a request's size (header lines, header
count, body) but not how long a client may take to send it, nor how many connections are
open. A client that connects and sends nothing is kept for ever, and so is one that sends a
header byte a second; 1,100 such connections exhausted edge-video's 1,024 descriptors (the
installer was locked out and a tamper alarm's clip was not written). With TLS it is worse:
asyncio's TLS layer creates the application protocol only after the handshake, so the
connections that never finish one are invisible to anything above it.

So the listening socket gets its own protocol factory. Each accepted TCP connection is a
:class:`_Connection` that sees the raw socket first: it is counted against a per-address and
a global cap *before* any TLS or HTTP work, then upgraded to TLS with
``loop.start_tls`` (handshake deadline included) and only then handed to aiohttp's request
handler, to which it forwards every event. A sweeper closes any connection that has no
request running and has not delivered a complete request head within ``header_s`` of its
accept or ``idle_s`` of its last answer. At the cap, an idle connection is
closed to make room — from an address that never logged in first, then from the address
holding the most, then the one idle for longest — so a flood of idle connections cannot lock
the installer out; when every connection is busy, the new one
is closed at once. Request bodies are read by the handlers under their own deadline.

The caps sit far below the process's descriptor limit (1,024 by default): the cameras,
clips, bus and WebRTC sessions keep the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edge.web.guard import address_key

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 128  # open connections in total
MAX_PER_ADDRESS = 16  # open connections per client address (a browser opens about 6)
HEADER_S = 10.0  # accept (TLS handshake included) to a complete request head
IDLE_S = 15.0  # end of an answer to the next request head (keep-alive)
BODY_S = 10.0  # to read a request body (handlers apply it)
SWEEP_S = 1.0
MAX_EARLY = 64 * 1024  # bytes kept between the TLS handshake and the handler
REPORT_S = 60.0  # refused connections are logged once per this period


class ConnectionLimits:
    """Every open connection of one listening socket, with the caps and deadlines."""

    def __init__(
        self,
        *,
        total: int = MAX_CONNECTIONS,
        per_address: int = MAX_PER_ADDRESS,
        header_s: float = HEADER_S,
        idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.per_address = total, per_address
        self.header_s, self.idle_s, self.clock = header_s, idle_s, clock
        self._open: dict[_Connection, None] = {}  # in accept order
        self._per_address: collections.Counter[str] = collections.Counter()
        self._by_transport: dict[Any, _Connection] = {}
        # Addresses that logged in before (the login guard's): their connections go last.
        self.trusted: Callable[[str], bool] = lambda _key: False
        self.refused = 0  # connections closed at accept (every one busy at a cap)
        self.evicted = 0  # idle connections closed to make room
        self.expired = 0  # connections closed by a deadline
        self._reported = (0, 0, 0)

    def __len__(self) -> int:
        return len(self._open)

    # -- accounting -------------------------------------------------------------------------
    def admit(self, conn: _Connection) -> bool:
        """Count ``conn`` in, making room by closing idle ones; False: close it at once."""
        if self._per_address[conn.key] >= self.per_address and not self._evict(conn.key):
            self.refused += 1
            return False
        if len(self._open) >= self.total and not self._evict(None):
            self.refused += 1
            return False
        self._open[conn] = None
        self._per_address[conn.key] += 1
        return True

    def release(self, conn: _Connection) -> None:
        if self._open.pop(conn, False) is None:
            self._per_address[conn.key] -= 1
            if self._per_address[conn.key] <= 0:
                del self._per_address[conn.key]
        if conn.transport is not None:
            self._by_transport.pop(conn.transport, None)

    def close_unserved(self) -> None:
        """Close the connections aiohttp does not know of yet (TLS handshake under way):
        the runner's shutdown closes the others."""
        for conn in [c for c in self._open if c.handler is None]:
            self.release(conn)
            conn.abort()

    def attached(self, conn: _Connection, transport: Any) -> None:
        self._by_transport[transport] = conn

    def _evict(self, key: str | None) -> bool:
        """Close an idle connection of address ``key``, or of any address: first one from an
        address that never logged in, then from the address holding the most connections,
        then the one idle for longest. An installer who logged in before keeps its
        connection even while a flood from many addresses fills the table (the flood's own
        connections go first)."""
        idle = [c for c in self._open if not c.busy and (key is None or c.key == key)]
        if not idle:
            return False
        victim = min(
            idle,
            key=lambda c: (self.trusted(c.key), -self._per_address[c.key], c.idle_since),
        )
        self.release(victim)
        victim.abort()
        self.evicted += 1
        return True

    # -- requests ---------------------------------------------------------------------------
    def request_started(self, transport: Any) -> None:
        conn = self._by_transport.get(transport)
        if conn is not None:
            conn.busy += 1

    def request_ended(self, transport: Any) -> None:
        conn = self._by_transport.get(transport)
        if conn is not None:
            conn.busy = max(0, conn.busy - 1)
            conn.idle_since = self.clock()
            conn.deadline = conn.idle_since + self.idle_s

    # -- deadlines --------------------------------------------------------------------------
    async def sweeper(self) -> None:
        """Close the connections past their deadline; log refusals once per REPORT_S."""
        reported_at = self.clock()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = self.clock()
            for conn in [c for c in self._open if not c.busy and now >= c.deadline]:
                self.release(conn)
                conn.abort()
                self.expired += 1
            if now - reported_at >= REPORT_S:
                reported_at = now
                self._report()

    def _report(self) -> None:
        counts = (self.refused, self.evicted, self.expired)
        if counts != self._reported:
            refused, evicted, expired = (a - b for a, b in zip(counts, self._reported, strict=True))
            log.warning(
                "web: %d connection(s) refused at the caps (%d in total, %d per address), "
                "%d idle one(s) closed to make room, %d closed by the read deadlines",
                refused,
                self.total,
                self.per_address,
                evicted,
                expired,
            )
            self._reported = counts


class _Connection(asyncio.Protocol):
    """One accepted TCP connection: counted, upgraded to TLS, then aiohttp's handler's."""

    def __init__(
        self,
        limits: ConnectionLimits,
        make_handler: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.limits, self.make_handler, self.tls = limits, make_handler, tls
        self.key = ""
        self.raw: asyncio.Transport | None = None
        self.transport: Any = None  # what the handler writes to (TLS or raw)
        self.handler: asyncio.Protocol | None = None
        self.upgrade: asyncio.Task[None] | None = None
        self.early = bytearray()  # data decrypted before the handler is attached
        self.early_eof = False
        self.busy = 0
        self.idle_since = limits.clock()
        self.deadline = self.idle_since + limits.header_s
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        peer = transport.get_extra_info("peername")
        self.key = address_key(str(peer[0]) if peer else "unknown")
        if not self.limits.admit(self):
            self.closed = True
            transport.abort()
            return
        if self.tls is None:
            self._attach(transport)
            return
        transport.pause_reading()  # the ClientHello is for the TLS layer, not for us
        self.upgrade = asyncio.get_running_loop().create_task(self._start_tls(self.tls))

    async def _start_tls(self, tls: ssl.SSLContext) -> None:
        assert self.raw is not None
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                self.raw, self, tls, server_side=True, ssl_handshake_timeout=self.limits.header_s
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("web: TLS handshake with %s failed: %s", self.key, exc)
            self._lost()
            self.raw.abort()
            return
        if self.closed or secure is None:
            if secure is not None:
                secure.abort()
            return
        self._attach(secure)

    def _attach(self, transport: Any) -> None:
        self.transport = transport
        self.limits.attached(self, transport)
        self.handler = self.make_handler()
        self.handler.connection_made(transport)
        if self.early:
            early, self.early = bytes(self.early), bytearray()
            self.handler.data_received(early)
        if self.early_eof and not self.handler.eof_received():
            transport.close()

    def abort(self) -> None:
        """Close at once (cap or deadline); aiohttp's handler hears connection_lost."""
        self.closed = True
        if self.upgrade is not None and not self.upgrade.done():
            self.upgrade.cancel()
        target = self.transport or self.raw
        if target is not None:
            target.abort()

    # -- forwarded to aiohttp's handler -----------------------------------------------------
    def data_received(self, data: bytes) -> None:
        """Forwarded; what TLS decrypts in the instant before the handler exists is kept
        (bounded like a request head) and handed over first."""
        if self.handler is not None:
            self.handler.data_received(data)
        elif len(self.early) + len(data) <= MAX_EARLY:
            self.early += data
        else:
            self.abort()

    def eof_received(self) -> bool | None:
        if self.handler is None:
            self.early_eof = True
            return True  # keep the transport open until the handler decides
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        if self.handler is not None:
            handler, self.handler = self.handler, None
            handler.connection_lost(exc)

    def _lost(self) -> None:
        self.closed = True
        self.limits.release(self)


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with :class:`ConnectionLimits` between the socket and aiohttp."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limits: ConnectionLimits,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.limits, self.tls = host, port, limits, ssl_context
        self.sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self.limits, server, self.tls),
            self.host,
            self.port,
            backlog=self._backlog,
        )
        self.sweeper = loop.create_task(self.limits.sweeper(), name="web-connections")

    async def stop(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        await super().stop()
        self.limits.close_unserved()

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self.port
