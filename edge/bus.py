"""Client of the box broker (our own mosquitto on loopback or a unix socket), bridged into asyncio.

Integration: paho-mqtt runs *without* its network thread. Its socket callbacks hand the socket
to the asyncio loop (``add_reader``/``add_writer`` → ``loop_read``/``loop_write``) and a small
task calls ``loop_misc`` for keepalive. Every piece of state — paho's, our futures and queues —
is touched from the loop thread only, so there are no locks and no thread hand-offs, and a
message reaches a subscriber's queue in the same loop iteration that read it. (Chosen over
paho's ``loop_start()`` thread, which would need ``call_soon_threadsafe`` for every callback and
lets publish futures race the network thread; the socket-callback API proved reliable here,
including across broker restarts.)

``connect()`` is paho's blocking call, run on the loop on purpose: the box broker is local by
construction (:func:`parse_url` refuses anything but loopback or a unix socket), so the
connect either succeeds or is refused (ECONNREFUSED / ENOENT) within microseconds; it never
waits on a network. Only CONNACK and everything after it are awaited asynchronously.

Durability is not the broker's job (see ARCHITECTURE §2): we use clean sessions, re-subscribe
ourselves after every reconnect, and a publish that fails or times out raises :class:`BusError`
so that the caller keeps the event in its journal and retries. A publish that timed out after
it was written may still be delivered later: delivery is at-least-once, consumers dedupe by id.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json as _json
import logging
import os
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.errors import BusError, CommandError, ConfigError

__all__ = [
    "Bus",
    "BusAddress",
    "Message",
    "Subscription",
    "Topics",
    "parse_url",
    "publish_once",
    "request_once",
    "topic_id",
]

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0
CONNACK_TIMEOUT = 10.0
MISC_INTERVAL = 1.0
CLOSE_FLUSH_TIMEOUT = 2.0
Payload = bytes | str | dict[str, Any] | list[Any]


@dataclass(frozen=True)
class Message:
    """One message received from the box broker."""

    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        """The payload parsed as JSON; remote input, so errors say what was wrong."""
        try:
            text = self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"message on {self.topic} is not UTF-8 text (bad byte at offset {exc.start}): "
                "send JSON encoded as UTF-8"
            ) from exc
        try:
            return _json.loads(text)
        except _json.JSONDecodeError as exc:
            raise CommandError(
                f"message on {self.topic} is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}"
            ) from exc


@dataclass(frozen=True)
class BusAddress:
    transport: Literal["tcp", "unix"]
    host: str  # IP address, or the socket path for unix
    port: int


def parse_url(url: str) -> BusAddress:
    """``mqtt://127.0.0.1:PORT`` or ``unix:///path.sock``; loopback only (see module doc)."""
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


def encode_payload(payload: Payload) -> bytes:
    """dict/list → compact UTF-8 JSON, str → UTF-8, bytes as they are."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (dict, list)):
        return _json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raise TypeError(f"cannot publish a {type(payload).__name__}: use bytes, str, dict or list")


def describe_os_error(exc: OSError) -> str:
    """'Connection refused (ECONNREFUSED)': the words for people, the name for searching."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


# -- topics ------------------------------------------------------------------------------------
def topic_id(value: str, what: str = "id") -> str:
    """An id that becomes one topic level: a wildcard or '/' in it would address other topics."""
    if not value or any(c in value for c in "/+#\0"):
        raise CommandError(
            f"{what} {value!r} cannot be used in a topic: it must be non-empty and contain "
            "no '/', '+', '#' or NUL"
        )
    return value


def validate_filter(topic_filter: str) -> None:
    """MQTT filter rules, checked here so the error names the filter instead of a SUBACK code."""
    levels = topic_filter.split("/")
    bad = not topic_filter or "\0" in topic_filter
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or (
            "#" in level and (level != "#" or i < len(levels) - 1)
        ):
            bad = True
    if bad:
        raise ValueError(
            f"invalid topic filter {topic_filter!r}: '+' must fill a whole level and '#' must be "
            "the whole last level"
        )


class Topics:
    """The box topics; ``*_ALL`` are filters for subscribers."""

    EVENTS = "edge/events"
    ALARM_STATUS = "edge/alarm/status"
    ALARM_CMD = "edge/alarm/cmd"
    ALARM_CMD_RESULT = "edge/alarm/result"
    CMD_RESULT = "edge/cmd/result"
    CMD_ALL = "edge/cmd/+"  # also matches CMD_RESULT: command handlers must skip it
    ZONE_STATE_ALL = "edge/zones/+/state"
    SIM_SET_ALL = "edge/sim/zones/+/set"
    OUTPUT_STATE_ALL = "edge/outputs/+/state"

    @staticmethod
    def zone_state(zone_id: str) -> str:
        return f"edge/zones/{topic_id(zone_id, 'zone id')}/state"

    @staticmethod
    def sim_set(zone_id: str) -> str:
        return f"edge/sim/zones/{topic_id(zone_id, 'zone id')}/set"

    @staticmethod
    def output_state(output_id: str) -> str:
        return f"edge/outputs/{topic_id(output_id, 'output id')}/state"

    @staticmethod
    def cmd(name: str) -> str:
        if name == "result":
            raise CommandError("'result' is not a command name: edge/cmd/result carries results")
        return f"edge/cmd/{topic_id(name, 'command name')}"

    @staticmethod
    def id_in(topic_filter: str, topic: str) -> str:
        """The level of ``topic`` matched by the single '+' of ``topic_filter``."""
        levels, pattern = topic.split("/"), topic_filter.split("/")
        if pattern.count("+") != 1 or not mqtt.topic_matches_sub(topic_filter, topic):
            raise CommandError(f"topic {topic!r} does not match {topic_filter!r}")
        return levels[pattern.index("+")]


# -- subscriptions -----------------------------------------------------------------------------
class Subscription:
    """Bounded stream of messages for one filter; when full, the oldest message is dropped."""

    WARN_EVERY = 5.0  # seconds between two "queue full" warnings: the log is bounded too

    def __init__(self, bus: Bus, topic_filter: str, maxsize: int) -> None:
        self.topic_filter = topic_filter
        self.maxsize = maxsize
        self.dropped = 0
        self._bus = bus
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self._closed = False
        self._last_warning = -float("inf")

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        msg = await self._queue.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def get(self, timeout: float | None = None) -> Message:
        """Next message; TimeoutError after ``timeout`` s, BusError once closed."""
        if self._closed:
            raise BusError(f"the subscription to {self.topic_filter} is closed")
        try:
            msg = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no message on {self.topic_filter} within {timeout:g} s") from None
        if msg is None:
            raise BusError(f"the subscription to {self.topic_filter} is closed")
        return msg

    async def wait_subscribed(self, timeout: float | None = None) -> bool:
        """True once the broker acknowledged the (re-)subscription of the current connection."""
        return await self._bus._wait_subscribed(self.topic_filter, timeout)

    def close(self) -> None:
        """Unsubscribe (when no other Subscription shares the filter) and end iteration."""
        if self._closed:
            return
        self._closed = True
        self._bus._unsubscribe(self)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wakes a consumer blocked in get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deliver(self, msg: Message) -> None:
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._bus._count_drop()
            now = time.monotonic()
            if now - self._last_warning >= self.WARN_EVERY:
                self._last_warning = now
                log.warning(
                    "subscription %s is full (%d messages): dropped the oldest, %d so far; "
                    "its consumer is too slow",
                    self.topic_filter,
                    self.maxsize,
                    self.dropped,
                )
        self._queue.put_nowait(msg)


@dataclass(eq=False)
class _Request:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    fut: asyncio.Future[None]
    mid: int | None = None


@dataclass(eq=False)
class _Filter:
    """One broker subscription, shared by every local Subscription with the same filter."""

    topic_filter: str
    sub_id: int  # MQTT v5 subscription identifier: routes messages without re-matching
    qos: int
    subs: list[Subscription]
    acked: asyncio.Event


class Bus:
    """A supervised connection to the box broker; see the module docstring for the design."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        queue_size: int = 1000,
        keepalive: int = 30,
        will: tuple[str, bytes, bool] | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self.url = url
        self.client_id = client_id
        self.on_connect_change: Callable[[bool], None] | None = None
        self.last_error: str | None = None
        self._addr = parse_url(url)
        self._queue_size = queue_size
        self._keepalive = keepalive
        self._client = self._make_client(client_id, will)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = False
        self._closing = False
        self._connected_evt = asyncio.Event()
        self._lost = asyncio.Event()
        self._connack: asyncio.Future[bool] | None = None
        self._backlog: deque[_Request] = deque()  # waiting for a connection, in publish order
        self._inflight: dict[int, _Request] = {}  # handed to paho, waiting for PUBACK / write
        self._pending = 0
        self._filters: dict[str, _Filter] = {}
        self._by_sub_id: dict[int, _Filter] = {}
        self._sub_mids: dict[int, _Filter] = {}
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

    # -- public API ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def stats(self) -> dict[str, int]:
        """Counters since construction, plus the publishes currently waiting."""
        return {**self._stats, "pending": self._pending}

    async def start(self) -> None:
        """Start the supervised connection; returns at once (see :meth:`wait_connected`)."""
        if self._tasks:
            return
        if self._closing:
            raise BusError(f"the bus to {self.url} was closed; create a new Bus")
        self._loop = asyncio.get_running_loop()
        for name, coro in (("connect", self._supervise()), ("misc", self._misc())):
            task = self._loop.create_task(coro, name=f"bus-{name}[{self.client_id}]")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    async def wait_connected(self, timeout: float | None = None) -> bool:
        if self._connected:
            return True
        try:
            await asyncio.wait_for(self._connected_evt.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def publish(
        self,
        topic: str,
        payload: Payload,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish and wait for the PUBACK (qos ≥ 1) or the write (qos 0).

        While disconnected the message waits (up to ``timeout``) for the connection; messages
        waiting and in flight are bounded by ``queue_size``, beyond which this raises at once.
        """
        data = encode_payload(payload)
        if not topic or "+" in topic or "#" in topic or qos not in (0, 1, 2):
            raise ValueError(f"cannot publish on {topic!r} with qos {qos}: no wildcards, qos 0-2")
        if self._loop is None or self._closing:
            state = "closed" if self._closing else "not started (call start() first)"
            raise BusError(f"the bus to {self.url} is {state}")
        if self._pending >= self._queue_size:
            raise BusError(
                f"{self._pending} messages already wait for the box broker at {self.url} "
                f"(queue_size {self._queue_size}): keep {topic} in the journal and retry later"
            )
        req = _Request(topic, data, qos, retain, self._loop.create_future())
        self._pending += 1
        try:
            if self._connected and not self._backlog:
                self._send(req)
            else:
                self._backlog.append(req)
            await asyncio.wait_for(req.fut, timeout)
        except asyncio.TimeoutError:
            raise self._timeout_error(req, timeout) from None
        finally:
            self._pending -= 1
            if req.mid is None:
                if req in self._backlog:
                    self._backlog.remove(req)
            elif self._inflight.get(req.mid) is req:
                del self._inflight[req.mid]

    def subscribe(
        self, topic_filter: str, *, qos: int = 1, maxsize: int | None = None
    ) -> Subscription:
        """A bounded stream of the messages matching ``topic_filter``, kept across reconnects."""
        validate_filter(topic_filter)
        sub = Subscription(self, topic_filter, maxsize or self._queue_size)
        entry = self._filters.get(topic_filter)
        if entry is None:
            self._next_sub_id += 1
            entry = _Filter(topic_filter, self._next_sub_id, qos, [], asyncio.Event())
            self._filters[topic_filter] = entry
            self._by_sub_id[entry.sub_id] = entry
        elif qos <= entry.qos:
            entry.subs.append(sub)
            return sub
        entry.qos = max(entry.qos, qos)
        entry.subs.append(sub)
        if self._connected:
            self._send_subscribe(entry)
        return sub

    async def close(self) -> None:
        """Disconnect cleanly (the broker does not send the will) and stop every task."""
        if self._closing:
            return
        self._closing = True
        for entry in list(self._filters.values()):
            for sub in list(entry.subs):
                sub.close()
        if self._connected:
            self._client.disconnect()
            try:
                await asyncio.wait_for(self._lost.wait(), CLOSE_FLUSH_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("the box broker at %s did not see our DISCONNECT in time", self.url)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._drop_socket()
        closed = BusError(f"the bus to {self.url} was closed before the message was sent")
        for req in [*self._backlog, *self._inflight.values()]:
            if not req.fut.done():
                req.fut.set_exception(closed)
        self._backlog.clear()
        self._inflight.clear()

    # -- used by Subscription ----------------------------------------------------------------
    def _unsubscribe(self, sub: Subscription) -> None:
        entry = self._filters.get(sub.topic_filter)
        if entry is None or sub not in entry.subs:
            return
        entry.subs.remove(sub)
        if entry.subs:
            return
        del self._filters[entry.topic_filter]
        del self._by_sub_id[entry.sub_id]
        if self._connected and not self._closing:
            self._client.unsubscribe(entry.topic_filter)

    def _count_drop(self) -> None:
        self._stats["dropped"] += 1

    async def _wait_subscribed(self, topic_filter: str, timeout: float | None) -> bool:
        entry = self._filters.get(topic_filter)
        if entry is None:
            return False
        try:
            await asyncio.wait_for(entry.acked.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

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
            # Blocking on purpose: loopback / unix socket only, see the module docstring.
            self._client.connect(
                self._addr.host, self._addr.port, self._keepalive, clean_start=True
            )
        except OSError as exc:
            self.last_error = describe_os_error(exc)
            return False
        try:
            accepted = await asyncio.wait_for(self._connack, CONNACK_TIMEOUT)
        except asyncio.TimeoutError:
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
    def _send(self, req: _Request) -> None:
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

    def _send_subscribe(self, entry: _Filter) -> None:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = entry.sub_id
        entry.acked.clear()
        _, mid = self._client.subscribe(
            entry.topic_filter, options=SubscribeOptions(qos=entry.qos), properties=props
        )
        if mid is not None:
            self._sub_mids[mid] = entry

    def _timeout_error(self, req: _Request, timeout: float) -> BusError:
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


# -- one-shot helpers for short-lived CLI commands ---------------------------------------------
def publish_once(
    url: str,
    topic: str,
    payload: Payload,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout: float = 5.0,
) -> None:
    """Connect, publish, wait for the PUBACK, disconnect. Not for use inside a running loop."""

    async def main() -> None:
        bus = await _connected_bus(url, timeout)
        try:
            await bus.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        finally:
            await bus.close()

    asyncio.run(main())


def request_once(
    url: str, topic: str, payload: Payload, reply_topic: str, timeout: float = 5.0
) -> Message:
    """Subscribe to ``reply_topic``, publish, return the first message on it.

    The first message may be a retained one (that is how a caller waits for a retained status);
    command replies should therefore not be retained. Raises BusError when the broker cannot be
    reached and TimeoutError when nothing answers within ``timeout``.
    """

    async def main() -> Message:
        deadline = time.monotonic() + timeout
        bus = Bus(url, _cli_client_id())
        sub = bus.subscribe(reply_topic, maxsize=16)
        try:
            await _connect(bus, timeout)
            await bus.publish(topic, payload, timeout=max(0.0, deadline - time.monotonic()))
            try:
                return await sub.get(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"no reply on {reply_topic} within {timeout:g} s") from None
        finally:
            await bus.close()

    return asyncio.run(main())


def _cli_client_id() -> str:
    return f"edge-cli-{os.getpid()}-{secrets.token_hex(3)}"


async def _connected_bus(url: str, timeout: float) -> Bus:
    bus = Bus(url, _cli_client_id())
    try:
        await _connect(bus, timeout)
    except BaseException:
        await bus.close()
        raise
    return bus


async def _connect(bus: Bus, timeout: float) -> None:
    """Retries until ``timeout`` (the broker may be starting), then names the last reason."""
    await bus.start()
    if not await bus.wait_connected(timeout):
        raise BusError(
            f"cannot reach the box broker at {bus.url}: {bus.last_error or 'no answer'}; "
            "is edge-broker running?"
        )
