"""The box topics, and the checks that keep ids and filters from addressing other topics."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edge.errors import CommandError


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
    # Local control: each local user publishes on its own level, which the broker's ACL binds
    # to the identity, so the level is who acts; answers come back under edge-alarm's prefix.
    LOCAL_CMD_ALL = "edge/local/+/cmd"
    REPLY_PREFIX = "edge/alarm/reply/"  # edge-alarm's answers: reply/<caller class>/…
    SIM_REPLY = "edge/alarm/reply/sim"
    # Tele-actions from live sessions: edge-video asks, edge-alarm checks the allow-list.
    LIVE_ACTION = "edge/live/action"
    LIVE_ACTION_REPLY = "edge/alarm/reply/video"
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
    def local_cmd(user: str) -> str:
        return f"edge/local/{topic_id(user, 'user name')}/cmd"

    @staticmethod
    def local_reply(user: str) -> str:
        """Base of the answers to local user ``user`` (only that identity may read them)."""
        return f"{Topics.REPLY_PREFIX}local/{topic_id(user, 'user name')}"

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
