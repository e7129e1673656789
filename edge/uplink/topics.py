"""The mapping between box topics and central topics, as the box broker's bridge applies it.

Box services never name the central broker: they publish what must leave the box under
``edge/up/<suffix>`` and receive what the central station sends under ``edge/down/<suffix>``.
The bridge rewrites ``edge/up/`` ↔ ``sites/<site id>/`` for the suffixes listed here and
nothing else, so a message published on any other box topic never leaves the box.

The two local prefixes differ on purpose: a message coming in (``edge/down/…``) can never
match an outgoing pattern (``edge/up/…``), so nothing loops through the box broker. On the
central side the patterns overlap (``live/+/ice`` both ways, ``cmd/+`` matches
``cmd/result``, ``clips/#`` matches ``clips/+/ack``); the bridge subscribes with MQTT 5
*no-local*, so the central broker does not send the bridge its own messages back
(see docs/bridge.md).

The bridge's link state is published by mosquitto itself (bridge notifications), retained,
on ``sites/<site id>/link`` both on the central broker and on the box broker: ``1`` when
connected, ``0`` when not (``0`` is also the will the central broker publishes if the box
vanishes).
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edge.bus.topics import topic_id

UP_PREFIX = "edge/up/"
DOWN_PREFIX = "edge/down/"
SITES_PREFIX = "sites/"
LINK_SUFFIX = "link"

# Suffixes (MQTT filters) bridged box → central and central → box.
UP_SUFFIXES: tuple[str, ...] = (
    "events",
    "heartbeat",
    "cmd/result",
    "diag",
    "clips/#",
    "live/+/answer",
    "live/+/ice",
    "live/+/bye",
    "patrol/+",
)
DOWN_SUFFIXES: tuple[str, ...] = (
    "ack",
    "cmd/+",
    "live/+/offer",
    "live/+/ice",
    "live/+/bye",
    "clips/+/ack",
)

UP_EVENTS = UP_PREFIX + "events"
UP_HEARTBEAT = UP_PREFIX + "heartbeat"
UP_CMD_RESULT = UP_PREFIX + "cmd/result"
UP_DIAG = UP_PREFIX + "diag"
DOWN_ACK = DOWN_PREFIX + "ack"
DOWN_CMD_ALL = DOWN_PREFIX + "cmd/+"
DOWN_LIVE_ALL = DOWN_PREFIX + "live/+/+"
DOWN_CLIP_ACK_ALL = DOWN_PREFIX + "clips/+/ack"


def central_prefix(site_id: str) -> str:
    """``sites/<site id>/``: the root of every central topic of the site."""
    return f"{SITES_PREFIX}{topic_id(site_id, 'site id')}/"


def link(site_id: str) -> str:
    """Retained bridge state ("1" up, "0" down): same topic on the box and central brokers."""
    return central_prefix(site_id) + LINK_SUFFIX


def up(suffix: str) -> str:
    """Box topic that the bridge carries to ``sites/<id>/<suffix>``; ValueError if it would not
    leave the box (a typo here would silently keep a message on the box)."""
    return _mapped(UP_PREFIX, suffix, UP_SUFFIXES, "box → central")


def down(suffix: str) -> str:
    """Box topic on which the bridge delivers ``sites/<id>/<suffix>`` from the central."""
    return _mapped(DOWN_PREFIX, suffix, DOWN_SUFFIXES, "central → box")


def up_clip(event_id: str) -> str:
    return up(f"clips/{topic_id(event_id, 'event id')}")


def up_live(session: str, kind: str) -> str:
    """Box → central WebRTC signalling: ``kind`` is "answer" or "ice"."""
    return up(f"live/{topic_id(session, 'live session')}/{topic_id(kind, 'signal')}")


def down_cmd(name: str) -> str:
    """Where command ``name`` arrives; handlers subscribed to DOWN_CMD_ALL must skip "result"
    should a central client ever publish ``cmd/result`` (it is a box → central topic)."""
    if name == "result":
        raise ValueError("'result' is not a command name: cmd/result carries results upward")
    return down(f"cmd/{topic_id(name, 'command name')}")


def to_central(site_id: str, box_topic: str) -> str:
    """Where a message published on ``box_topic`` appears on the central broker."""
    suffix = _strip(box_topic, UP_PREFIX)
    return central_prefix(site_id) + up(suffix)[len(UP_PREFIX) :]


def to_box(site_id: str, central_topic: str) -> str:
    """Where a message published centrally on ``central_topic`` appears on the box broker."""
    return down(_strip(central_topic, central_prefix(site_id)))


def _mapped(prefix: str, suffix: str, patterns: tuple[str, ...], way: str) -> str:
    if not suffix or any(c in suffix for c in "+#\0") or "//" in suffix:
        raise ValueError(f"{suffix!r} is not a topic suffix: no wildcards or empty levels")
    if not any(mqtt.topic_matches_sub(p, suffix) for p in patterns):
        raise ValueError(
            f"{suffix!r} is not bridged {way}: use one of {', '.join(patterns)} "
            "(edge/uplink/topics.py)"
        )
    return prefix + suffix


def _strip(topic: str, prefix: str) -> str:
    if not topic.startswith(prefix):
        raise ValueError(f"topic {topic!r} does not start with {prefix!r}")
    return topic[len(prefix) :]


__all__ = [
    "DOWN_ACK",
    "DOWN_CLIP_ACK_ALL",
    "DOWN_CMD_ALL",
    "DOWN_LIVE_ALL",
    "DOWN_PREFIX",
    "DOWN_SUFFIXES",
    "LINK_SUFFIX",
    "SITES_PREFIX",
    "UP_CMD_RESULT",
    "UP_DIAG",
    "UP_EVENTS",
    "UP_HEARTBEAT",
    "UP_PREFIX",
    "UP_SUFFIXES",
    "central_prefix",
    "down",
    "down_cmd",
    "link",
    "to_box",
    "to_central",
    "up",
    "up_clip",
    "up_live",
]
