"""The paho side of :class:`~edge.bus.Bus`: client state, supervision, packets out, callbacks in.

Everything here runs on the loop thread (see the edge.bus docstring); :class:`Bus` adds the
public API on top of this state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.bus.address import describe_os_error, parse_url
from edge.bus.identity import Credentials
from edge.bus.message import Message
from edge.bus.subscription import Subscription
from edge.errors import BusError
from edge.tasks import within

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0
CONNACK_TIMEOUT = 10.0
MISC_INTERVAL = 1.0
REFUSED_BAD_LOGIN = 0x86  # MQTT 5 CONNACK: bad user name or password
REFUSED_NOT_AUTHORISED = 0x87


@dataclass(eq=False)
class Request:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    fut: asyncio.Future[None]
    mid: int | None = None


@dataclass(eq=False)
class SharedFilter:
    """One broker subscription, shared by every local Subscription with the same filter."""

    topic_filter: str
    sub_id: int  # MQTT v5 subscription identifier: routes messages without re-matching
    qos: int
    subs: list[Subscription]
    acked: asyncio.Event


class Connection:
    """State shared by the paho callbacks and :class:`Bus`; never used on its own."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        queue_size: int = 1000,
        keepalive: int = 30,
        will: tuple[str, bytes, bool] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """``credentials``: the box-bus identity (edge.bus.identity); None connects anonymously,
        which only a bare test broker accepts."""
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self.url = url
        self.client_id = client_id
        self.on_connect_change: Callable[[bool], None] | None = None
        self.last_error: str | None = None
        self._addr = parse_url(url)
        self._queue_size = queue_size
        self._keepalive = keepalive
        self.identity = credentials.user if credentials else None
        self._client = self._make_client(client_id, will)
        if credentials is not None:
            self._client.username_pw_set(credentials.user, credentials.password)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = False
        self._closing = False
        self._connected_evt = asyncio.Event()
        self._lost = asyncio.Event()
        self._connack: asyncio.Future[bool] | None = None
        self._backlog: deque[Request] = deque()  # waiting for a connection, in publish order
        self._inflight: dict[int, Request] = {}  # handed to paho, waiting for PUBACK / write
        self._pending = 0
        self._filters: dict[str, SharedFilter] = {}
        self._by_sub_id: dict[int, SharedFilter] = {}
        self._sub_mids: dict[int, SharedFilter] = {}
        self._next_sub_id = 0
        self._stats = {"connects": 0, "disconnects": 0, "published": 0, "dropped": 0}

    def _make_client(self, client_id: str, will: tuple[str, bytes, bool] | None) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            transport=self._addr.transport,
        )
        c.on_log = self._on_log
        c.suppress_exceptions = True  # paho would abort mid-packet; _on_log reports it instead
        c.max_queued_messages_set(self._queue_size)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=will[2])
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        return c

    # -- connection supervision --------------------------------------------------------------
    async def _supervise(self) -> None:
        """Connect, wait for the session to end, back off with full jitter, forever."""
        failures = 0
        while True:
            if await self._session():
                failures = 0
                delay = random.uniform(0, BACKOFF_BASE)
            else:
                failures += 1
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**failures))
                log.warning(
                    "cannot reach the box broker at %s: %s (attempt %d, next in %.2f s)",
                    self.url,
                    self.last_error,
                    failures,
                    delay,
                )
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One connection from connect() to its loss; True if the broker accepted it."""
        assert self._loop is not None
        self._lost.clear()
        self._connack = self._loop.create_future()
        try:
            # Blocking on purpose: loopback / unix socket only, see the edge.bus docstring.
            self._client.connect(
                self._addr.host, self._addr.port, self._keepalive, clean_start=True
            )
        except OSError as exc:
            self.last_error = describe_os_error(exc)
            return False
        try:
            accepted = await within(self._connack, CONNACK_TIMEOUT)
        except TimeoutError:
            self.last_error = f"no CONNACK within {CONNACK_TIMEOUT:.0f} s"
            self._drop_socket()
            return False
        if accepted:
            await self._lost.wait()
        return accepted

    async def _misc(self) -> None:
        """Keepalive pings and their timeout; paho needs this about once a second."""
        while True:
            await asyncio.sleep(MISC_INTERVAL)
            if self._client.socket() is not None:
                self._client.loop_misc()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("bus task %s failed: %r", task.get_name(), task.exception())

    def _drop_socket(self) -> None:
        """Forget a socket paho still holds (no CONNACK, or close() without the broker)."""
        sock = self._client.socket()
        if sock is not None:
            self._on_socket_close(self._client, None, sock)
            sock.close()
        self._set_connected(False)
        self._lost.set()

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        if up:
            self._connected_evt.set()
            self._stats["connects"] += 1
        else:
            self._connected_evt.clear()
            self._stats["disconnects"] += 1
            for entry in self._filters.values():
                entry.acked.clear()
        if self.on_connect_change is not None:
            try:
                self.on_connect_change(up)
            except Exception:
                log.exception("on_connect_change(%s) failed", up)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, req: Request) -> None:
        info = self._client.publish(req.topic, req.payload, qos=req.qos, retain=req.retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and req.qos):
            req.mid = info.mid  # qos ≥ 1 without a connection: paho resends it on reconnect
            self._inflight[info.mid] = req
        elif not req.fut.done():
            req.fut.set_exception(
                BusError(f"cannot publish {req.topic} to {self.url}: {mqtt.error_string(info.rc)}")
            )

    def _flush_backlog(self) -> None:
        """After CONNACK, and after paho queued its own resends, so older messages go first."""
        while self._backlog and self._connected:
            req = self._backlog.popleft()
            if not req.fut.done():
                self._send(req)

    def _send_subscribe(self, entry: SharedFilter) -> None:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = entry.sub_id
        entry.acked.clear()
        _, mid = self._client.subscribe(
            entry.topic_filter, options=SubscribeOptions(qos=entry.qos), properties=props
        )
        if mid is not None:
            self._sub_mids[mid] = entry

    def _timeout_error(self, req: Request, timeout: float) -> BusError:
        if req.mid is None:
            return BusError(
                f"cannot reach the box broker at {self.url} within {timeout:g} s "
                f"({self.last_error or 'no connection'}); is edge-broker running?"
            )
        return BusError(f"no acknowledgement for {req.topic} from {self.url} within {timeout:g} s")

    # -- paho callbacks (always on the loop thread) -------------------------------------------
    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        """paho's own log: its socket errors precede our 'lost the box broker' warning, so they
        are debug detail; an exception caught in one of our callbacks is a bug."""
        if text.startswith("Caught exception"):
            log.error("paho: %s", text)
        else:
            log.debug("paho: %s", text)

    def _fd(self, sock: Any) -> int | None:
        """The descriptor to (un)watch; None once the loop or the socket is gone (GC, close)."""
        if self._loop is None or self._loop.is_closed():
            return None
        try:
            fd = int(sock.fileno())
        except (OSError, ValueError):
            return None
        return fd if fd >= 0 else None

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        _no_delay(sock)
        fd = self._fd(sock)
        if fd is not None and self._loop is not None:
            self._loop.add_reader(fd, client.loop_read)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = self._fd(sock)
        if fd is not None and self._loop is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = self._fd(sock)
        if fd is not None and self._loop is not None:
            self._loop.add_writer(fd, client.loop_write)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = self._fd(sock)
        if fd is not None and self._loop is not None:
            self._loop.remove_writer(fd)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self.last_error = f"the broker refused the connection: {reason}"
            if reason.value in (REFUSED_BAD_LOGIN, REFUSED_NOT_AUTHORISED):
                who = f"identity {self.identity!r}" if self.identity else "no identity"
                self.last_error += (
                    f" ({who}; the box broker admits only the identities in bus.identities_dir: "
                    "`sudo edge bus init` creates the services', `edge bus users` lists them)"
                )
            self._resolve_connack(False)
            return
        self.last_error = None
        for entry in self._filters.values():
            self._send_subscribe(entry)
        assert self._loop is not None
        self._loop.call_soon(self._flush_backlog)
        log.info("connected to the box broker at %s as %s", self.url, self.client_id)
        self._set_connected(True)
        self._resolve_connack(True)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_up = self._connected
        awaited = self._connack is not None and not self._connack.done()
        self._sub_mids.clear()
        if not self._closing and (was_up or awaited):
            from_broker = getattr(flags, "is_disconnect_packet_from_server", False)
            # paho reports a plain socket close as "Unspecified error"; say what happened
            why = str(reason) if from_broker or reason.value != 0x80 else "connection closed"
            self.last_error = f"connection lost: {why}"
            if was_up:
                log.warning("lost the box broker at %s: %s", self.url, why)
        for mid, req in list(self._inflight.items()):
            if req.qos == 0 and not req.fut.done():  # paho does not resend qos 0
                del self._inflight[mid]
                req.fut.set_exception(BusError(f"connection to {self.url} lost before the write"))
        self._resolve_connack(False)
        self._set_connected(False)
        self._lost.set()

    def _resolve_connack(self, accepted: bool) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(accepted)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        req = self._inflight.pop(mid, None)
        if req is None or req.fut.done():
            return
        if reason.is_failure:
            req.fut.set_exception(BusError(f"the box broker refused {req.topic}: {reason}"))
        else:
            self._stats["published"] += 1
            req.fut.set_result(None)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        entry = self._sub_mids.pop(mid, None)
        if entry is None:
            return
        if any(r.is_failure for r in reasons):
            log.error(
                "the box broker refused the subscription to %s: %s",
                entry.topic_filter,
                ", ".join(str(r) for r in reasons),
            )
        else:
            entry.acked.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos)
        ids = getattr(msg.properties, "SubscriptionIdentifier", None)
        if ids:
            ids = ids if isinstance(ids, list) else [ids]
            entries = [self._by_sub_id[i] for i in ids if i in self._by_sub_id]
        else:
            entries = [
                e
                for e in self._filters.values()
                if mqtt.topic_matches_sub(e.topic_filter, msg.topic)
            ]
        for entry in entries:
            for sub in list(entry.subs):
                sub._deliver(message)


def _no_delay(sock: Any) -> None:
    """Send small MQTT packets at once: with Nagle's algorithm and the peer's delayed ACK,
    every publish on TCP would wait ~40 ms for its PUBACK (the alarm path budget is 20 ms)."""
    if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
