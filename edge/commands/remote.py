"""Request / reply over the box bus for short-lived CLI commands (`edge sim`, `edge panel`).

A command that cannot reach the service it needs says so within about a second, names the
unit to look at *on this machine* (edge.service_hint), and exits with a status of its own,
so a script can tell "the box is not running" from "you typed it wrong":

* 64 (EX_USAGE) — the command itself is wrong (unknown zone, bad argument);
* 69 (EX_UNAVAILABLE) — the box broker or the service does not answer;
* 77 (EX_NOPERM) — the broker refused who we are (no or wrong box-bus identity, not allowed).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from typing import TYPE_CHECKING, Any

from edge.config import SiteConfig, default_path
from edge.errors import EX_UNAVAILABLE, EX_USAGE, BusError, CommandError, EdgeError
from edge.service_hint import how_to_start

if TYPE_CHECKING:  # edge.bus loads paho: not before the broker is known to listen
    from edge.bus.identity import Credentials
    from edge.bus.message import Message

EX_NOPERM = 77  # sysexits.h: permission denied
ANSWER_S = 5.0  # an arm or an output switch is answered in milliseconds; 5 s is a stuck service


class Unavailable(EdgeError, ConnectionError):
    """The box broker or the service does not answer: exit 69 (EX_UNAVAILABLE)."""

    exit_code = EX_UNAVAILABLE


class NotAdmitted(EdgeError, PermissionError):
    """The box broker refused our identity, or it cannot be read: exit 77 (EX_NOPERM)."""

    exit_code = EX_NOPERM


@dataclasses.dataclass(frozen=True)
class Answer:
    """The service's JSON answer and the retained messages read with it."""

    body: dict[str, Any]
    retained: dict[str, Message]


def exit_status(exc: BaseException) -> int:
    """Print ``exc`` as the command's error and return its exit status."""
    print(f"error: {exc}", file=sys.stderr)
    return int(getattr(exc, "exit_code", EX_USAGE))


def require_broker(cfg: SiteConfig, config_path: str | None = None) -> None:
    """Unavailable at once when nothing listens at the box broker's address (edge.reach):
    checked before the MQTT client is even loaded."""
    from edge.reach import why_not_listening

    reason = why_not_listening(cfg.bus.url)
    if reason is not None:
        raise _broker_down(cfg, config_path, cfg.bus.url, reason)


def _broker_down(cfg: SiteConfig, config_path: str | None, url: str, reason: str) -> Unavailable:
    where = config_path or default_path()
    return Unavailable(
        f"the box broker (edge-broker) is not running: nothing answers at {url} "
        f"({reason}). {_cap(how_to_start('edge-broker', cfg, where))}"
    )


def identity_of(cfg: SiteConfig, name: str, *, required: bool = True) -> Credentials | None:
    """The box-bus identity ``name``, or NotAdmitted saying how to get access to it.

    Not ``required`` and absent: None, and the command connects without identity — which
    only a bare broker (a test bench) admits; the box broker then refuses it with the words
    "not authorised … `sudo edge bus init`". A file that exists but cannot be read (not root,
    not in edge-admin) is always an error."""
    from edge.bus.identity import identity_path, load_credentials

    if not required and not identity_path(cfg.bus.identities_dir, name).exists():
        return None
    try:
        return load_credentials(cfg.bus.identities_dir, name)
    except BusError as exc:
        raise NotAdmitted(str(exc)) from None


def ask(
    cfg: SiteConfig,
    topic: str,
    body: dict[str, Any],
    reply_prefix: str,
    unit: str,
    *,
    credentials: Credentials | None = None,
    config_path: str | None = None,
    timeout: float = ANSWER_S,
    retained: tuple[str, ...] = (),
    status_topic: str | None = None,
) -> Answer:
    """Send ``body`` with a private reply topic and return ``unit``'s JSON answer.

    ``retained``: topics read on the same connection (a status, the link state).
    ``status_topic``: the unit's retained status; when it says ``"running": false`` the
    command fails at once instead of waiting ``timeout`` for an answer.
    Raises Unavailable, NotAdmitted, or CommandError for a nonsensical answer."""
    from edge.bus.once import BrokerRefused, BrokerUnreachable, ServiceDown, exchange_once

    where = config_path or default_path()
    reply = f"{reply_prefix}/{uuid.uuid4().hex[:12]}"
    topics = retained + ((status_topic,) if status_topic and status_topic not in retained else ())

    def down(seen: dict[str, Message]) -> str | None:
        return _stopped(unit, seen.get(status_topic)) if status_topic else None

    try:
        exchange = exchange_once(
            cfg.bus.url,
            topic,
            json.dumps({**body, "reply": reply}),
            reply,
            timeout,
            credentials,
            retained=topics,
            down=down,
        )
    except BrokerUnreachable as exc:
        raise _broker_down(cfg, config_path, exc.url, exc.reason) from None
    except BrokerRefused as exc:
        raise NotAdmitted(str(exc)) from None
    except ServiceDown as exc:
        raise Unavailable(f"{exc}. {_cap(how_to_start(unit, cfg, where))}") from None
    except TimeoutError:
        raise Unavailable(
            f"no answer from {unit} within {timeout:g} s: it is not running or is stuck. "
            f"{_cap(how_to_start(unit, cfg, where))}"
        ) from None
    except BusError as exc:
        if "not authori" in str(exc).lower():
            raise NotAdmitted(str(exc)) from None
        raise Unavailable(str(exc)) from None
    try:
        answer = exchange.reply.json()
    except ValueError as exc:
        raise CommandError(f"unreadable answer from {unit}: {exc}") from None
    if not isinstance(answer, dict):
        raise CommandError(f"unexpected answer from {unit}: {answer!r}")
    return Answer(answer, exchange.retained)


def _stopped(unit: str, status: Message | None) -> str | None:
    """Why ``unit`` cannot answer, from its retained status (``"running": false``)."""
    if status is None:
        return None  # no status yet (a broker restart): the request decides
    try:
        data = status.json()
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("running") is False:
        return f"{unit} is not running (its last status says it stopped)"
    return None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
