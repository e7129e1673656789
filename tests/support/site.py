"""A site box wired to a central station, for end-to-end tests: a central mosquitto with TLS
and the shipped ACL, the box broker running the configuration we generate (bridge over
mutual TLS), `edge run alarm` (and `edge run video` when asked) as subprocesses, and a
central console peer that acknowledges events and signs commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.bus.identity import load_credentials
from edge.uplink.signing import private_key_from_seed, public_key_b64, sign_command
from support.alarm import BusWatcher, NotifySocket, start_alarm, stop, write_site
from support.broker import Broker
from support.central import Peer, central_section, console, start_box, start_central
from support.pki import Pki, make_pki

SITE = "site-a"
EDGE = str(Path(sys.executable).with_name("edge"))
SEED = bytes(range(32))
KEY = private_key_from_seed(SEED)


def toml_table(name: str, values: dict[str, Any]) -> str:
    return f"\n[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


class Site:
    """One site box wired to a central broker, and the central station's console."""

    def __init__(self, tmp: Path, extra: str = "", **central_overrides: Any) -> None:
        self.tmp = tmp
        self.extra = extra
        self.video: subprocess.Popen[bytes] | None = None
        self.pki: Pki = make_pki(tmp / "pki", (SITE, "site-b"))
        self.central: Broker = start_central(tmp / "central", self.pki)
        try:
            self._start(central_overrides)
        except BaseException:
            self.close()  # never leave brokers behind when the set-up fails
            raise

    def _start(self, central_overrides: dict[str, Any]) -> None:
        tmp = self.tmp
        self.section = central_section(
            self.pki, SITE, int(self.central.port or 0), **central_overrides
        )
        self.box: Broker = start_box(tmp / "box", SITE, self.section)
        extra = toml_table("central", self.section.model_dump())
        extra += toml_table("outbox", {"backoff_min_s": 1, "backoff_max_s": 10})
        extra += toml_table("heartbeat", {"interval_s": 10})
        extra += f'\n[[remote.keys]]\nid = "central-1"\npublic_key = "{public_key_b64(KEY)}"\n'
        extra += self.extra
        self.site = write_site(
            tmp / "alarm",
            self.box.url,
            swinger=20,
            extra=extra,
            site_id=SITE,
            identities=self.box.identities,
        )
        self.notify = NotifySocket(tmp / "notify.sock")
        self.console = self.connect_console()
        self.proc = self.start_alarm()

    def connect_console(self) -> Peer:
        peer = console(self.central, self.pki)
        peer.subscribe(f"sites/{SITE}/#")
        return peer

    def start_alarm(self) -> subprocess.Popen[bytes]:
        """Start edge-alarm and wait for its first heartbeat at the central: its loops run
        and the bridge is up, so a command published now is not lost."""
        proc = start_alarm(self.site, self.tmp / "alarm", self.notify)
        others = []
        try:
            self.notify.wait_for("READY=1", timeout=10)
            while True:
                msg = self.console.inbox.get(timeout=15)
                if msg.topic == f"sites/{SITE}/heartbeat":
                    break
                others.append(msg)
        except BaseException:
            stop(proc)
            raise
        for msg in others:  # keep what came before, for the test to read
            self.console.inbox.put(msg)
        return proc

    def start_video(self) -> subprocess.Popen[bytes]:
        """Start edge-video and wait until its cameras deliver (its retained status says so)."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        log = open(self.tmp / "video.log", "ab")  # noqa: SIM115 - closed with the process
        watch = self.watcher(("edge/video/status",))
        try:
            self.video = subprocess.Popen(
                [EDGE, "run", "video", "--config", str(self.site)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            deadline = time.monotonic() + 30
            while True:
                msg = watch.wait("edge/video/status", max(0.1, deadline - time.monotonic()))
                cameras = msg.json().get("cameras", {}).values()
                if msg.json().get("running") and all(c.get("up") for c in cameras):
                    return self.video
        finally:
            watch.close()

    def watcher(self, topics: tuple[str, ...] = ("edge/#",), name: str = "observer") -> BusWatcher:
        """A paho watcher on the box broker under a local identity (default: "observer")."""
        assert self.box.identities is not None
        me = load_credentials(self.box.identities, name)
        return BusWatcher(
            "127.0.0.1", int(self.box.port or 0), topics=topics, auth=(me.user, me.password)
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EDGE, *args, "--config", str(self.site)], capture_output=True, text=True, timeout=20
        )

    def trip(self, zone: str, how: str = "trip") -> None:
        out = self.cli("sim", how, zone)
        assert out.returncode == 0, out.stderr

    def event(self, kind: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.console.expect(f"sites/{SITE}/events", max(0.1, deadline - time.monotonic()))
            body = json.loads(msg.payload)
            if body["kind"] == kind:
                return body  # type: ignore[no-any-return]

    def ack(self, *ids: str) -> None:
        self.console.publish(f"sites/{SITE}/ack", json.dumps({"v": 1, "ids": list(ids)}))

    def journal(self) -> list[dict[str, Any]]:
        out = self.cli("events", "--json", "--limit", "1000")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def command(self, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return sign_command(
            KEY,
            key_id="central-1",
            site=SITE,
            name=name,
            args=args,
            operator=kw.pop("operator", "op-17"),
            **kw,
        )

    def result(self, nonce: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.console.expect(
                f"sites/{SITE}/cmd/result", max(0.1, deadline - time.monotonic())
            )
            body = json.loads(msg.payload)
            if body.get("nonce") == nonce:
                return body  # type: ignore[no-any-return]

    def close(self) -> None:
        for part in ("video", "proc", "console", "box", "central", "notify"):
            thing = getattr(self, part, None)
            if thing is None:
                continue
            if part in ("proc", "video"):
                stop(thing)
            elif part in ("box", "central"):
                thing.stop()
            else:
                thing.close()
