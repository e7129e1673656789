"""The bridge section of the box broker's mosquitto configuration (box → central station).

One outgoing MQTT 5 connection per site, mutual TLS, client id = site id = certificate CN.
What mosquitto 2.0.11 does with it (checked against two real brokers, tests/test_bridge.py):

* bridge subscriptions on the central broker carry MQTT 5 *no-local* (and retain-as-published):
  the central does not echo the bridge's own messages, so overlapping patterns
  (``live/+/ice`` both ways, ``cmd/+`` vs ``cmd/result``) do not loop back to the box;
* notifications: retained ``1``/``0`` on ``sites/<id>/link``, on the central broker (``0`` is
  the will) and on the box broker (``0`` as soon as the link drops, ``1`` when it is back);
* missing TLS files do not stop mosquitto: the local bus runs and the bridge retries,
  reloading the files on each attempt;
* reconnection: a jittered exponential back-off capped at 10 s (:func:`restart_timeout_line`),
  so the link is back within 12 s of the central broker's return, measured;
* a central broker that is down and one that refuses the site certificate both log
  ``Error creating bridge: Protocol error.``; docs/bridge.md says how to tell them apart;
* ``cleansession false`` keeps the *box-side* session: messages published while the link is
  down wait in the box broker (bounded, saved to disk on shutdown and every
  :data:`AUTOSAVE_INTERVAL_S`) and leave when it is back. The *central-side* session is not
  kept over MQTT 5: mosquitto 2.0 sends no session expiry interval on a bridge, so what the
  central publishes while the box is offline is dropped. The protocol tolerates it: events
  are resent from edge-alarm's outbox until acknowledged, and commands expire anyway.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from pathlib import Path

from edge.config.central import CentralConfig, missing_files
from edge.errors import ConfigError
from edge.uplink import topics

log = logging.getLogger(__name__)

CONNECTION_NAME = "central"
PERSISTENCE_SUBDIR = "broker"
AUTOSAVE_INTERVAL_S = 300  # crash-loss window of the broker queue; SD-card friendly
BRIDGE_QOS = 1


def persistence_dir(data_dir: str) -> Path:
    """Where the box broker saves its queue (mosquitto.db) when bridging."""
    return Path(data_dir, PERSISTENCE_SUBDIR)


def persistence_lines(data_dir: str) -> list[str]:
    """Global settings that let the bridge's queue survive a broker restart (best effort:
    the outbox, not this file, is what guarantees delivery)."""
    where = persistence_dir(data_dir)
    if re.search(r"\s", str(where)):
        raise ConfigError(
            "paths.data_dir", [f"{str(where)!r} contains whitespace: choose a path without"]
        )
    return [
        "persistence true",
        f"persistence_location {where}/",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
    ]


def queue_lines(bus_queue: int, central: CentralConfig) -> list[str]:
    """Per-client queue bounds; mosquitto 2.0 has no per-bridge bound, so these are global."""
    return [
        f"max_queued_messages {max(bus_queue, central.max_queued_messages)}",
        f"max_queued_bytes {central.max_queued_bytes}",
    ]


def bridge_lines(site_id: str, central: CentralConfig) -> list[str]:
    """The `connection` block; it must come last: bridge options bind to the last connection."""
    return [
        "",
        f"# Bridge to the central station: sites/{site_id}/ <-> edge/up/, edge/down/",
        f"connection {CONNECTION_NAME}",
        f"address {central.host}:{central.port}",
        "bridge_protocol_version mqttv50",
        f"remote_clientid {site_id}",
        f"cleansession {_bool(central.cleansession)}",
        f"keepalive_interval {central.keepalive_s}",
        restart_timeout_line(site_id, central),
        *tls_lines(central),
        *notification_lines(site_id),
        *topic_lines(site_id),
    ]


def restart_timeout_line(site_id: str, central: CentralConfig) -> str:
    """mosquitto's jittered backoff, ``restart_timeout BASE CAP``, with a base of this box's own.

    mosquitto 2.0 waits BASE after the link drops, then min(CAP, random(BASE, 3 × previous))
    after each failed attempt, and back to BASE once connected. The jitter thus starts only
    after a failure: boxes that lose a central broker that restarts quickly would all retry
    BASE seconds later, in the same second. Each box therefore takes its own BASE, spread
    over [restart_timeout_min_s, restart_timeout_max_s] by its site id (stable across
    restarts, so the generated file does not change from one start to the next)."""
    return f"restart_timeout {first_delay_s(site_id, central)} {central.restart_timeout_max_s}"


def first_delay_s(site_id: str, central: CentralConfig) -> int:
    """This box's reconnection base, spread evenly by a hash of the site id."""
    low, high = central.restart_timeout_min_s, central.restart_timeout_max_s
    digest = hashlib.sha256(site_id.encode("utf-8")).digest()
    return low + int.from_bytes(digest[:4], "big") % (high - low + 1)


def tls_lines(central: CentralConfig) -> list[str]:
    return [
        f"bridge_cafile {central.ca_path()}",
        f"bridge_certfile {central.cert_path()}",
        f"bridge_keyfile {central.key_path()}",
        # Check the central's name against its certificate: never connect to an impostor.
        "bridge_insecure false",
        "bridge_require_ocsp false",
        f"bridge_tls_version {central.tls_version}",
    ]


def notification_lines(site_id: str) -> list[str]:
    return [
        "notifications true",
        "notifications_local_only false",
        f"notification_topic {topics.link(site_id)}",
    ]


ACK_SUFFIXES = ("ack", "clips/+/ack")


def topic_lines(site_id: str) -> list[str]:
    """Explicit patterns each way (never `#`), so only what we list crosses the bridge."""
    remote = topics.central_prefix(site_id)
    out = [f"topic {s} out {BRIDGE_QOS} {topics.UP_PREFIX} {remote}" for s in topics.UP_SUFFIXES]
    into = [
        f"topic {s} in {_in_qos(s)} {topics.DOWN_PREFIX} {remote}" for s in topics.DOWN_SUFFIXES
    ]
    return out + into


def _in_qos(suffix: str) -> int:
    """Acks cross the bridge at QoS 0. mosquitto does not set TCP_NODELAY on a bridge's own
    connection, so each QoS 1 ack makes the bridge send a tiny PUBACK that holds the next
    event behind the central's delayed TCP ACK (~40 ms per event). A lost ack costs nothing:
    the event is resent with the same id and acknowledged again."""
    return 0 if suffix in ACK_SUFFIXES else BRIDGE_QOS


def prepare(data_dir: str, site_id: str, central: CentralConfig) -> None:
    """Before mosquitto starts: create its save directory and say what the bridge will lack.

    Problems are logged, not raised: the box broker is also the local bus, which must run
    even when the link to the central station cannot."""
    persistence_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    for problem in missing_files(central) + certificate_problems(central.cert_path(), site_id):
        log.error("bridge to %s:%s will not work: %s", central.host, central.port, problem)


def certificate_problems(path: Path, site_id: str, now: dt.datetime | None = None) -> list[str]:
    """What would make the central broker refuse the site certificate, found before mosquitto
    tries. A CN other than the site id is the insidious one: the bridge connects, the link
    even says 1, and the central ACL silently denies every message."""
    from cryptography import x509  # here, not at import: edge-alarm runs without OpenSSL
    from cryptography.x509.oid import NameOID

    where = f"central.cert_file: {path}"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError:
        return []  # missing or unreadable: reported by missing_files
    except ValueError:
        return [f"{where} is not a PEM certificate: install the .crt the CA issued"]
    problems = []
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [site_id]:
        problems.append(
            f"{where} is issued to CN={','.join(names) or '(none)'} but this site is "
            f"{site_id!r}: install the certificate issued for CN={site_id}"
        )
    now = now or dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_after_utc < now:
        problems.append(f"{where} expired on {cert.not_valid_after_utc:%Y-%m-%d}: renew it")
    elif cert.not_valid_before_utc > now:
        problems.append(
            f"{where} is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
            "check the box clock (NTP)"
        )
    return problems


def _bool(value: bool) -> str:
    return "true" if value else "false"
