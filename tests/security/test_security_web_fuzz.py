"""WHEP offers from a hostile client: hypothesis feeds the real web server and the real live hub
mangled SDP, and nothing may escape — no unhandled exception in any asyncio task (aiortc's
background tasks included), every answer a 2xx or 4xx with a sentence.

The hub is the real one over a real (idle) camera feed; the server listens on loopback and is
spoken to over HTTP. An asyncio exception handler counts what would otherwise only be logged
("Task exception was never retrieved", exceptions in callbacks).
"""

from __future__ import annotations

import asyncio
import base64
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import SiteConfig
from edge.config.live import WebConfig
from edge.video.live.feed import LiveFeed
from edge.video.live.hub import LiveHub
from edge.web.credentials import set_password
from edge.web.server import WebServer

PASSWORD = "fuzzing the offers"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"tech:{PASSWORD}".encode()).decode()}
SDP = {"Content-Type": "application/sdp", **AUTH}
ALLOWED = {201, 400, 404, 408, 413, 415, 503}


class Harness:
    """One event loop holding the server and the hub for every example."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.unhandled: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.unhandled.append(ctx))
        cfg = SiteConfig.model_validate(
            {
                "site": {"id": "fuzz"},
                "video": {"cameras": [{"id": "yard", "source": "synthetic", "url": "walker"}]},
                "live": {"viewers_per_camera": 16},
            }
        )
        self.reports: list[dict[str, Any]] = []
        self.hub = LiveHub(
            cfg,
            {"yard": LiveFeed("yard")},
            lambda camera: [],
            lambda camera: True,
            lambda camera, body: self.reports.append(body),
        )
        users = tmp / "web-users"
        set_password(users, "tech", PASSWORD)
        web = WebConfig(listen="127.0.0.1", credentials_file=str(users), https=False)
        self.server = WebServer(web.model_copy(update={"port": 0}), self.hub, site_id="fuzz")
        self.run(self.server.start())
        self.http = self.run(self._session())
        self.offer = self.run(_real_offer())
        self.statuses: dict[int, int] = {}

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(base_url=self.server.url)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def post(self, body: bytes, hang_up: bool) -> tuple[int, str, str]:
        """POST an offer; a session granted is ended at once or left to run (``hang_up``)."""
        async with self.http.post("/whep/yard", data=body, headers=SDP) as resp:
            text = await resp.text(errors="replace")
            location = resp.headers.get("Location", "")
        if resp.status == 201 and (hang_up or len(self.hub.sessions) >= 8):
            async with self.http.delete(location, headers=AUTH) as bye:
                assert bye.status == 200, await bye.text()
        return resp.status, text, resp.headers.get("Content-Type", "")

    def close(self) -> None:
        self.run(self.http.close())
        self.run(self.hub.close_all("test over"))
        self.run(self.server.stop())
        self.settle()
        self.loop.close()

    def settle(self) -> None:
        """Let background tasks finish, then collect them (unretrieved errors surface here)."""
        self.run(asyncio.sleep(1.0))
        gc.collect()
        self.run(asyncio.sleep(0.1))


async def _real_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("actions")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()
    assert h.unhandled == [], [c.get("message") for c in h.unhandled]


# A line of SDP as a fuzzer would write one: a known type letter, then anything.
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=60
)
LINE = st.builds(
    lambda kind, text: f"{kind}{text}",
    st.sampled_from(
        [f"{k}=" for k in "vosimctabkrzu"] + ["m=video ", "a=fingerprint:", "a=setup:"]
    ),
    TEXT,
)
# Candidates with hostile fields. Addresses stay on this machine (loopback): the box really
# sends connectivity checks to what it accepts.
CANDIDATE = st.builds(
    lambda transport, address, port, kind: (
        f"a=candidate:1 1 {transport} 2130706431 {address} {port} typ {kind}"
    ),
    st.sampled_from(["udp", "udp", "udp", "UDP", "tcp", "sctp", ""]),
    st.sampled_from(["127.0.0.1", "127.0.0.1", "::1", "x.local", "localhost", "127.0.0.256"]),
    st.one_of(
        st.integers(65_536, 1_000_000),
        st.integers(-5, 65_535),
        st.sampled_from(["", "1e3", "0x50", "99999999999999"]),
    ),
    st.sampled_from(["host", "host", "srflx", "relay", "prflx", "", "typ"]),
)


@st.composite
def with_candidates(draw: st.DrawFn, base: str) -> bytes:
    """The real offer with hostile candidates added to its media sections."""
    lines: list[str] = []
    for line in base.splitlines():
        lines.append(line)
        if line.startswith("a=mid:"):
            lines.extend(draw(st.lists(CANDIDATE, max_size=3)))
    return ("\r\n".join(lines) + "\r\n").encode()


@st.composite
def mangled_offer(draw: st.DrawFn, base: str) -> bytes:
    lines = base.splitlines()
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["drop", "dup", "replace", "insert", "truncate", "swap"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = draw(LINE)
        elif op == "insert":
            lines.insert(i, draw(st.one_of(LINE, CANDIDATE)))
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    text = "\r\n".join(lines) + draw(st.sampled_from(["\r\n", "\n", ""]))
    return text.encode("utf-8", errors="surrogatepass")


def offers(base: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mangled_offer(base),
        with_candidates(base),
        st.binary(max_size=300),
        st.lists(LINE, max_size=12).map(lambda ls: "\r\n".join(["v=0", *ls]).encode()),
    )


def test_whep_offers_never_escape(harness: Harness) -> None:
    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        body = data.draw(offers(harness.offer))
        status, text, ctype = harness.run(harness.post(body, data.draw(st.booleans())))
        harness.statuses[status] = harness.statuses.get(status, 0) + 1
        assert status in ALLOWED, (status, text, body[:200])
        if status == 201:
            assert ctype.startswith("application/sdp") and text.startswith("v=0")
        else:
            assert ctype.startswith("text/plain") and len(text.strip()) > 10, (status, text)
            assert "Traceback" not in text

    one()
    harness.run(harness.hub.close_all("fuzz over"))
    harness.settle()
    print("statuses:", harness.statuses, "unhandled:", len(harness.unhandled))
    assert harness.unhandled == [], [c.get("message") for c in harness.unhandled][:5]
    assert harness.hub.sessions == {}, "every session of the fuzz was closed"
    started = sorted(r["session"] for r in harness.reports if r["event"] == "started")
    ended = sorted(r["session"] for r in harness.reports if r["event"] == "ended")
    assert started == ended  # every session granted was ended, once, refused offers included
    assert harness.statuses.get(400, 0) > 0  # the fuzz did reach the refusals
