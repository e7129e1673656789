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

from edge.bus.address import BusAddress, parse_url
from edge.bus.address import describe_os_error as describe_os_error
from edge.bus.client import Bus
from edge.bus.message import Message
from edge.bus.message import Payload as Payload
from edge.bus.message import encode_payload as encode_payload
from edge.bus.once import publish_once, receive_once, request_once
from edge.bus.subscription import Subscription
from edge.bus.topics import Topics, topic_id
from edge.bus.topics import validate_filter as validate_filter

__all__ = [
    "Bus",
    "BusAddress",
    "Message",
    "Subscription",
    "Topics",
    "parse_url",
    "publish_once",
    "receive_once",
    "request_once",
    "topic_id",
]
