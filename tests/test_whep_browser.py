"""LAN live view in a real browser: the box's own page in headless Chromium, WHEP to the box.

A real mosquitto, `edge run alarm` (outputs simulated at the pin, the journal) and `edge run
video` (a synthetic camera encoding H.264, the live hub and the local web server) as
subprocesses; the web user is created with the CLI an installer types. Chromium loads the page
and drives it only through the hooks the page exposes for tests (edgeLogin, edgeWatch,
edgeAction, edgeStop). What is judged is what a person would see: a decoded 640x360 picture
whose frames advance, the siren really switched by edge-alarm, and the audit trail.
The page is served as every box serves it by default: HTTPS with the box's own self-signed
certificate, whose fingerprint `edge web cert` shows (the browser is told to accept it, as the
installer does after comparing the fingerprints).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from support.alarm import NotifySocket, start_alarm, stop, write_site
from support.broker import free_port, start_mosquitto
from support.browser import chromium, missing_reason

pytestmark = pytest.mark.slow

EDGE = str(Path(sys.executable).with_name("edge"))
USER, PASSWORD = "installer", "walk the yard at dawn"
WIDTH, HEIGHT, FPS = 640, 360, 15

SITE_EXTRA = """
[[video.cameras]]
id = "yard"
name = "Yard"
source = "synthetic"
url = "walker"
width = {width}
height = {height}
fps = {fps}
gop_s = 2

[live]
policy = "always"

[live.actions]
outputs = ["siren"]

[web]
listen = "127.0.0.1"
port = {port}
credentials_file = "{credentials}"
"""

# Instrumentation only: remember every peer connection the page makes, so the test can read
# its WebRTC statistics (which codec was negotiated and decoded). Nothing is changed.
RECORD_PEERS = """
(() => {
  const Original = window.RTCPeerConnection;
  window.__edgePeers = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) { super(...args); window.__edgePeers.push(this); }
  };
})();
"""

VIDEO_SIZE = """
([w, h]) => { const v = document.getElementById('video'); return v.videoWidth === w
  && v.videoHeight === h; }
"""

PLAYBACK = """
() => {
  const v = document.getElementById('video');
  const q = v.getVideoPlaybackQuality();
  return { frames: q.totalVideoFrames, dropped: q.droppedVideoFrames, time: v.currentTime,
           width: v.videoWidth, height: v.videoHeight };
}
"""

INBOUND_VIDEO = """
async () => {
  const pc = window.__edgePeers[window.__edgePeers.length - 1];
  const stats = await pc.getStats();
  for (const s of stats.values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      const codec = s.codecId ? stats.get(s.codecId) : null;
      return { mime: codec ? codec.mimeType : null, fmtp: codec ? codec.sdpFmtpLine : null,
               decoded: s.framesDecoded, decoder: s.decoderImplementation || null };
    }
  }
  return null;
}
"""

# A WHEP POST made by hand with the right user name and a wrong password.
WRONG_PASSWORD_OFFER = """
async ([user, password]) => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver('video', { direction: 'recvonly' });
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch('/whep/yard', {
    method: 'POST', body: pc.localDescription.sdp, credentials: 'omit',
    headers: { 'Content-Type': 'application/sdp',
               Authorization: 'Basic ' + btoa(user + ':' + password) },
  });
  pc.close();
  return { status: res.status, location: res.headers.get('Location'), body: await res.text() };
}
"""


@dataclass
class Box:
    tmp: Path
    site: Path
    url: str
    video: subprocess.Popen[bytes]

    def cli(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [EDGE, *args, "--config", str(self.site)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert out.returncode == 0, f"edge {' '.join(args)} failed: {out.stderr}"
        return out.stdout

    def siren_on(self) -> bool:
        """What edge-alarm says of the output (`edge panel status --json`)."""
        status = json.loads(self.cli("panel", "status", "--json"))
        return bool(status["outputs"]["siren"]["on"])

    def journal(self) -> list[dict[str, Any]]:
        out = self.cli("events", "--json", "--limit", "200")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def live_events(self) -> list[dict[str, Any]]:
        return [e for e in self.journal() if e["kind"].startswith("live_")]

    def log(self, lines: int = 40) -> str:
        text = (self.tmp / "video.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def start_video(site: Path, workdir: Path) -> subprocess.Popen[bytes]:
    log = open(workdir / "video.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [EDGE, "run", "video", "--config", str(site)], stdout=log, stderr=subprocess.STDOUT
    )


# The box is local (no proxy); its certificate is self-signed (checked by fingerprint below).
INSECURE = ssl.create_default_context()
INSECURE.check_hostname, INSECURE.verify_mode = False, ssl.CERT_NONE
NO_PROXY = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=INSECURE)
)


def wait_page(box: Box, timeout: float = 20.0) -> None:
    """Until GET / answers 200: the web server is bound and serving the page."""
    deadline = time.monotonic() + timeout
    while True:
        if box.video.poll() is not None:
            pytest.fail(f"edge run video exited with {box.video.returncode}:\n{box.log()}")
        try:
            with NO_PROXY.open(box.url + "/", timeout=2) as res:
                if res.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no page on {box.url} within {timeout:g} s:\n{box.log()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("whep")
    with ExitStack() as stack:
        broker = start_mosquitto(tmp / "broker")
        stack.callback(broker.stop)
        port = free_port()
        extra = SITE_EXTRA.format(
            width=WIDTH, height=HEIGHT, fps=FPS, port=port, credentials=tmp / "web-users"
        )
        site = write_site(tmp, broker.url, extra=extra)
        notify = NotifySocket(tmp / "notify.sock")
        stack.callback(notify.close)
        alarm = start_alarm(site, tmp, notify)
        stack.callback(stop, alarm)
        video = start_video(site, tmp)
        stack.callback(stop, video)
        box = Box(tmp, site, f"https://127.0.0.1:{port}", video)
        created = box.cli("web", "passwd", USER, "--stdin", stdin=PASSWORD + "\n")
        assert f"created user {USER}" in created
        notify.wait_for("READY=1", timeout=10)
        wait_page(box)
        yield box


@pytest.fixture(scope="module")
def browser(box: Box) -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, box: Box) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.set_default_timeout(25_000)
        page.add_init_script(RECORD_PEERS)
        loaded = page.goto(box.url + "/")
        assert loaded is not None and loaded.status == 200, loaded
        page.wait_for_function("() => typeof window.edgeWatch === 'function'")
        yield page
    finally:
        context.close()


def test_wrong_password_is_refused_and_starts_nothing(box: Box, page: Page) -> None:
    before = box.live_events()
    refused = page.evaluate(
        """async ([u, p]) => { try { await window.edgeLogin(u, p); return null; }
           catch (e) { return { status: e.status, message: e.message }; } }""",
        [USER, "not the password"],
    )
    assert refused is not None, "a wrong password logged in"
    assert refused["status"] == 401 and "wrong user name or password" in refused["message"]
    assert page.is_visible("#login") and not page.is_visible("#cameras")

    whep = page.evaluate(WRONG_PASSWORD_OFFER, [USER, "not the password"])
    assert whep["status"] == 401 and whep["location"] is None, whep
    assert "wrong user name or password" in whep["body"]

    # The refused login is in the audit trail at once (the WHEP attempt that followed it
    # from the same address goes into the per-minute summary); no session was ever granted.
    def audited(events: list[dict[str, Any]]) -> bool:
        return any(e["kind"] == "live_refused" for e in events[len(before) :])

    after = wait_live_events(box, audited)
    assert after[: len(before)] == before
    new = after[len(before) :]
    assert {e["kind"] for e in new} == {"live_refused"}, f"a refused login started something: {new}"
    details = new[-1]["details"]
    assert details["operator"] == f"lan:{USER}" and details["code"] == "unauthorised", details
    assert (details["via"], details["remote"], details["count"]) == ("lan", "127.0.0.1", 1)
    assert details["users"] == [USER]
    time.sleep(0.5)  # a session, had one been granted anyway, would be journaled by now
    assert "live_started" not in {e["kind"] for e in box.live_events()[len(before) :]}


def test_the_certificate_is_the_one_edge_web_cert_shows(box: Box) -> None:
    shown = box.cli("web", "cert")
    line = next(ln for ln in shown.splitlines() if ln.startswith("SHA-256 fingerprint: "))
    pem = ssl.get_server_certificate(("127.0.0.1", int(box.url.rsplit(":", 1)[1])))
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    assert line.split(": ", 1)[1].replace(":", "") == digest


def test_live_view_decodes_switches_the_siren_and_is_audited(box: Box, page: Page) -> None:
    started = time.monotonic()
    site = page.evaluate("([u, p]) => window.edgeLogin(u, p)", [USER, PASSWORD])
    assert [c["id"] for c in site["cameras"]] == ["yard"] and site["outputs"] == ["siren"]

    with page.expect_response(lambda r: "/whep/yard" in r.url) as whep:
        watched = page.evaluate("() => window.edgeWatch('yard')")
    answer, offer = whep.value.text(), whep.value.request.post_data or ""
    codecs = f"offered: {rtpmaps(offer)}\nanswered: {rtpmaps(answer)}"
    assert whep.value.status == 201, codecs
    assert watched["location"].startswith("/whep/yard/lan-"), watched
    session = watched["location"].rsplit("/", 1)[1]

    # 1. The picture: Chromium decodes the box's H.264 at the camera's size, frames advance.
    try:
        page.wait_for_function(VIDEO_SIZE, arg=[WIDTH, HEIGHT], timeout=10_000)
    except Exception as exc:  # playwright's TimeoutError: say what was negotiated
        stats = page.evaluate(INBOUND_VIDEO)
        pytest.fail(f"no {WIDTH}x{HEIGHT} picture in 10 s ({exc}); {stats}\n{codecs}\n{box.log()}")
    first = page.evaluate(PLAYBACK)
    time.sleep(2.0)
    second = page.evaluate(PLAYBACK)
    assert second["frames"] - first["frames"] >= 10, (first, second)
    assert second["time"] > first["time"], (first, second)
    inbound = page.evaluate(INBOUND_VIDEO)
    assert inbound is not None and inbound["mime"].lower() == "video/h264", inbound
    assert inbound["decoded"] > 10, inbound

    # 2. Tele-actions on the data channel reach edge-alarm, which drives the output.
    assert not box.siren_on()
    on = page.evaluate("() => window.edgeAction({do: 'output', output: 'siren', op: 'on'})")
    assert on["ok"] is True and on["result"]["on"] is True, on
    assert box.siren_on()
    off = page.evaluate("() => window.edgeAction({do: 'output', output: 'siren', op: 'off'})")
    assert off["ok"] is True and off["result"]["on"] is False, off
    assert on["id"] != off["id"]
    assert not box.siren_on()

    # 3. Stopping ends the session on the box, and the audit trail holds all of it.
    assert page.evaluate("() => window.edgeStop()") is True
    operator = f"lan:{USER}"

    def of_session(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["details"].get("session") == session]

    events = of_session(
        wait_live_events(box, lambda evs: any(e["kind"] == "live_ended" for e in of_session(evs)))
    )
    kinds = [e["kind"] for e in events]
    by_kind = {e["kind"]: e["details"] for e in events}
    assert {"live_started", "live_ended", "live_action"} <= set(by_kind), kinds
    for kind in ("live_started", "live_ended"):
        details = by_kind[kind]
        assert (details["operator"], details["via"], details["camera"]) == (operator, "lan", "yard")
        assert details["remote"] == "127.0.0.1", details
    ended = by_kind["live_ended"]
    assert ended["connected"] is True and ended["frames"] > 0, ended
    assert ended["why"] == f"stopped by {USER}", ended
    assert ended["start"] < ended["end"], ended
    actions = [(d["details"]["target"], d["details"]["op"], d["details"]["ok"]) for d in events
               if d["kind"] == "live_action"]  # fmt: skip
    assert actions == [("siren", "on", True), ("siren", "off", True)], events
    assert all(e["details"]["operator"] == operator for e in events if e["kind"] == "live_action")
    switched = [
        (e["kind"], e["details"].get("output"))
        for e in box.journal()
        if e["kind"] in ("output_on", "output_off") and e["details"].get("user") == operator
    ]
    assert switched == [("output_on", "siren"), ("output_off", "siren")], switched
    assert time.monotonic() - started < 30


def wait_live_events(
    box: Box, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The journal's live_* events once ``done`` holds for them (edge-video reports on the bus,
    edge-alarm journals), or as they are at the timeout, for the assertions to explain."""
    deadline = time.monotonic() + timeout
    while True:
        events = box.live_events()
        if done(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def rtpmaps(sdp: str) -> list[str]:
    """The video codecs of an SDP (``a=rtpmap`` lines of its video section), for messages."""
    found, video = [], False
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video")
        elif video and line.startswith("a=rtpmap:"):
            found.append(line.split(" ", 1)[1])
    return found
