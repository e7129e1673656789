"""Two real brokers for bridge tests: a central mosquitto run from the shipped example
(docs/central, with test paths substituted) and a box broker run from *our* generated config.

Also an MQTT peer (paho, MQTT 5, optional TLS client certificate) that records what it
receives, so tests can act as a box service, the central console or an impostor site.
"""

from __future__ import annotations

import json
import os
import queue
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.bus import identity, passwd_file
from edge.bus.identity import Credentials, load_credentials
from edge.config import SiteConfig, parse_config
from edge.config.central import CentralConfig
from edge.uplink import bridge
from edge.uplink.broker import acl_path, render_local_config, write_acl
from support.broker import Broker, start_configured
from support.pki import CertFiles, Pki

REPO = Path(__file__).resolve().parents[2]
CENTRAL_DOCS = REPO / "docs" / "central"
WAIT = 5.0
LOOP_S = 0.02

SITE = """
[site]
id = "{site_id}"

[paths]
data_dir = "{data}"
run_dir = "{run}"

[bus]
url = "mqtt://127.0.0.1:{port}"
identities_dir = "{ids}"
"""
# Box-bus identities every generated box broker gets: the services', the installer's, and
# "observer", a local user for tests that watch the bus while the installer runs commands
# (one connection per identity: the broker uses the user name as the client id).
BOX_IDENTITIES = (*identity.SERVICES, identity.DEFAULT_LOCAL_USER, "observer")
SUPERUSER = "tester"  # only with start_box(superuser=True): reads and writes every topic


def central_config_text(template: str, workdir: Path, pki: Pki, port: int) -> str:
    """docs/central/mosquitto.conf with this test's port, PKI, ACL copy and directories.

    Every substituted directive must be in the template: if the example drifts (a directive
    renamed or removed), this fails instead of silently testing something else."""
    values = {
        "listener": f"{port} 127.0.0.1",
        "cafile": str(pki.ca.ca_file),
        "certfile": str(pki.server.cert),
        "keyfile": str(pki.server.key),
        "acl_file": str(workdir / "acl"),
        "persistence_location": f"{workdir}/",
        "log_dest": "stderr",
    }
    seen: set[str] = set()
    lines = []
    for line in template.splitlines():
        name = line.split(" ", 1)[0]
        if name in values and not line.startswith("#"):
            line = f"{name} {values[name]}"
            seen.add(name)
        lines.append(line)
    missing = set(values) - seen
    if missing:
        raise AssertionError(f"docs/central/mosquitto.conf lacks {sorted(missing)}")
    if os.geteuid() == 0:
        lines.append("user root")  # else mosquitto drops to 'mosquitto', which may not exist
    return "\n".join(lines) + "\n"


def start_central(workdir: Path, pki: Pki) -> Broker:
    """The central broker as docs/central ships it, on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "acl").write_text((CENTRAL_DOCS / "acl").read_text())
    template = (CENTRAL_DOCS / "mosquitto.conf").read_text()
    return start_configured(workdir, lambda port: central_config_text(template, workdir, pki, port))


def central_section(pki: Pki, site_id: str, port: int, **overrides: Any) -> CentralConfig:
    """A `[central]` section pointing at the test PKI, with test-short reconnection delays."""
    files = pki.site(site_id)
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "secrets_dir": str(pki.directory),
        "ca_file": pki.ca.ca_file.name,
        "cert_file": files.cert.name,
        "key_file": files.key.name,
        "restart_timeout_min_s": 1,
        "restart_timeout_max_s": 1,
        "keepalive_s": 5,
    }
    return CentralConfig(**(values | overrides))


def site_config(
    workdir: Path, site_id: str, port: int, central: CentralConfig | None = None
) -> SiteConfig:
    """A minimal site whose box broker listens on ``port``, parsed like a real site.toml;
    ``central`` goes into its `[central]` table once SiteConfig has that section."""
    text = SITE.format(
        site_id=site_id, data=workdir / "data", run=workdir / "run", port=port, ids=workdir / "ids"
    )
    if central is not None and "central" in SiteConfig.model_fields:
        text += "\n[central]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in central.model_dump().items()
        )
    return parse_config(text, str(workdir / "site.toml"))


def start_box(
    workdir: Path, site_id: str, central: CentralConfig, *, superuser: bool = False
) -> Broker:
    """The box broker of ``site_id`` running the config `edge run broker` would generate,
    with its identities in ``workdir/ids``. ``superuser``: also a test identity allowed every
    topic, for tests of the bridge itself (not of the box's ACL)."""
    ids = workdir / "ids"
    passwd_file.ensure(ids, [*BOX_IDENTITIES, *([SUPERUSER] if superuser else [])])
    passwd_file.write_passwd(ids)

    def render(port: int) -> str:
        cfg = site_config(workdir, site_id, port, central)
        wired = getattr(cfg, "central", None) is not None
        section = None if wired else central  # once wired, the real path: cfg.central
        bridge.prepare(cfg.paths.data_dir, site_id, central)
        write_acl(cfg)
        if superuser:
            with acl_path(cfg).open("a") as acl:
                acl.write(f"\nuser {SUPERUSER}\ntopic readwrite #\n")
        return render_local_config(cfg, section)

    box = start_configured(workdir, render)
    box.identities = ids
    return box


def box_peer(box: Broker, name: str, **kwargs: Any) -> Peer:
    """A paho peer on a generated box broker under identity ``name``."""
    assert box.port is not None and box.identities is not None
    return connect(box.port, auth=load_credentials(box.identities, name), **kwargs)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Peer:
    """A paho MQTT 5 client that records messages and the broker's reason codes."""

    client: mqtt.Client
    inbox: queue.Queue[Received] = field(default_factory=lambda: queue.Queue(maxsize=10_000))
    acks: queue.Queue[tuple[int, Any]] = field(default_factory=lambda: queue.Queue(maxsize=1000))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the network loop in a thread of ours: paho's loop_start thread takes up to a
        second to stop on a TLS connection or a dead broker, and never reconnects here."""
        # With a write hook set, paho no longer writes from the caller's thread: only ours
        # touches the (TLS) socket.
        self.client.on_socket_register_write = lambda _c, _u, _s: None
        self._thread = threading.Thread(target=self._run, name="mqtt-peer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.client.loop(timeout=LOOP_S) != mqtt.MQTT_ERR_SUCCESS:
                self._stop.wait(LOOP_S)  # connection lost: the test decides what to do

    def subscribe(self, topic: str) -> list[ReasonCode]:
        """Subscribe at QoS 1 and return the SUBACK reason codes."""
        _rc, mid = self.client.subscribe(topic, qos=1)
        return list(self._ack(mid))

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK reason code (MQTT 5 says why it was refused)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return self._ack(info.mid)  # type: ignore[no-any-return]

    def expect(self, topic: str, timeout: float = WAIT) -> Received:
        """The next message on ``topic``; other topics are skipped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if msg.topic == topic:
                return msg
        raise TimeoutError(f"nothing on {topic} within {timeout} s")

    def expect_payload(self, topic: str, payload: bytes, timeout: float = WAIT) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.expect(topic, max(0.01, deadline - time.monotonic()))
            if msg.payload == payload:
                return msg

    def until(self, topic: str, payload: bytes, timeout: float = WAIT) -> list[Received]:
        """Every message received up to and including ``payload`` on ``topic`` (a marker):
        what a broker would have delivered before the marker is in the list."""
        deadline = time.monotonic() + timeout
        got: list[Received] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            got.append(msg)
            if msg.topic == topic and msg.payload == payload:
                return got
        raise TimeoutError(f"no {payload!r} on {topic} within {timeout} s; got {got}")

    def seen(self) -> list[Received]:
        """Everything received and not yet consumed (empties the inbox)."""
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out

    def close(self) -> None:
        self.client.disconnect()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.client.loop(timeout=LOOP_S)  # write the DISCONNECT if the thread had not

    def _ack(self, mid: int) -> Any:
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            got, codes = self.acks.get(timeout=left)
            if got == mid:
                return codes
        raise TimeoutError(f"no acknowledgement for message id {mid}")


def connect(
    port: int,
    *,
    cert: CertFiles | None = None,
    ca_file: Path | None = None,
    client_id: str = "",
    session_expiry_s: int = 0,
    auth: Credentials | None = None,
) -> Peer:
    """A connected peer: TLS with ``cert`` when ``ca_file`` is given, plain TCP otherwise;
    ``session_expiry_s`` > 0 resumes / keeps a persistent session. A refused connection
    raises (ssl.SSLError when we refuse the server, ConnectionError when it refuses us)."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    if ca_file is not None:
        client.tls_set(
            ca_certs=str(ca_file),
            certfile=str(cert.cert) if cert else None,
            keyfile=str(cert.key) if cert else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if auth is not None:
        client.username_pw_set(auth.user, auth.password)
    peer = Peer(client)
    connected: queue.Queue[ReasonCode] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
    # A refused handshake or a closed socket ends in a disconnect without any CONNACK.
    client.on_disconnect = lambda _c, _u, _f, rc, _p: connected.put(rc)
    client.on_message = lambda _c, _u, m: peer.inbox.put(Received(m.topic, m.payload, m.retain))
    client.on_subscribe = lambda _c, _u, mid, codes, _p: peer.acks.put((mid, codes))
    client.on_publish = lambda _c, _u, mid, rc, _p: peer.acks.put((mid, rc))
    props = None
    if session_expiry_s:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
    client.connect("127.0.0.1", port, clean_start=not session_expiry_s, properties=props)
    _await_connack(client, connected, port)
    peer.start()
    return peer


def _await_connack(client: mqtt.Client, connected: queue.Queue[ReasonCode], port: int) -> None:
    """Run the loop here until the broker answers: paho's own thread would wait a second
    before retrying a refused connection."""
    deadline = time.monotonic() + WAIT
    while connected.empty() and time.monotonic() < deadline:
        client.loop(timeout=LOOP_S)
    if connected.empty():
        raise TimeoutError(f"no CONNACK from 127.0.0.1:{port}")
    rc = connected.get_nowait()
    if rc.is_failure or not client.is_connected():
        raise ConnectionError(f"connection to 127.0.0.1:{port} refused: {rc}")


def console(central: Broker, pki: Pki) -> Peer:
    """The central-station side: the console certificate, which the ACL lets read sites/#."""
    assert central.port is not None
    return connect(central.port, cert=pki.console, ca_file=pki.ca.ca_file)
