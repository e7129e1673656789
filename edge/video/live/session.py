"""One live session: a granted viewer, its WebRTC peer connection, tracks and data channel.

A session exists from its grant (a verified ``cmd/live``, or an authenticated WHEP request)
until it is closed — by the viewer (bye, DELETE), by the hub's timeouts (never connected,
link lost, maximum duration) or by edge-video stopping. It is answered once: a second offer
for the same session is refused, so a session id cannot be taken over.

The video transceiver is created before the offer is applied and restricted to H.264, so
the answer always selects H.264 whatever codec order the viewer prefers: the camera's own
packets are what is sent, and nothing is ever encoded on the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from edge.tasks import within
from edge.video.frames import EncodedPacket
from edge.video.live.api import LiveRefused
from edge.video.live.feed import LiveFeed
from edge.video.live.ice import rtc_configuration
from edge.video.live.track import PassthroughTrack

log = logging.getLogger(__name__)

ANSWER_S = 10.0  # ICE gathering (TURN allocations included) must finish within this
ACTIONS_PENDING = 8  # tele-actions waiting on one channel; beyond: refused at once
MAX_OFFER_BYTES = 64 * 1024
Via = Literal["central", "lan"]
ActionHandler = Callable[[str | bytes, "LiveSession"], Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Grant:
    """Who may watch what, and why (the audit record's identity)."""

    session: str
    camera: str
    operator: str
    reason: str
    via: Via
    remote: str = ""


class LiveSession:
    """Owned by the hub; every method runs in the event loop."""

    def __init__(
        self,
        grant: Grant,
        feed: LiveFeed,
        backlog: Callable[[], list[EncodedPacket]],
        servers: list[dict[str, Any]],
        *,
        audio: Any = None,
        on_action: ActionHandler | None = None,
    ) -> None:
        self.grant = grant
        self.feed = feed
        self.backlog = backlog
        self.servers = servers
        self.audio = audio
        self.on_action = on_action
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.idle_since: float | None = self.started  # not connected since
        self.connected_once = False
        self.closed: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.track: PassthroughTrack | None = None
        self.listen: MediaStreamTrack | None = None
        self.talking = False
        self.actions: asyncio.Queue[tuple[str | bytes, Any]] = asyncio.Queue(ACTIONS_PENDING)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.ended = asyncio.Event()

    @property
    def id(self) -> str:
        return self.grant.session

    # -- negotiation ---------------------------------------------------------------------------
    async def answer(self, offer_sdp: str) -> str:
        """The answer SDP (every candidate included); LiveRefused("bad_offer") when unusable."""
        if self.pc is not None:
            raise LiveRefused("bad_offer", f"session {self.id} was already answered")
        if len(offer_sdp) > MAX_OFFER_BYTES or "m=video" not in offer_sdp:
            raise LiveRefused("bad_offer", "the offer must be an SDP offer with a video section")
        offer_sdp = usable_candidates(offer_sdp)
        pc = self.pc = RTCPeerConnection(rtc_configuration(self.servers))
        self.track = PassthroughTrack(self.feed, self.backlog)
        video = pc.addTransceiver(self.track, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences([c for c in caps if c.mimeType.lower() in _H264])
        self._audio(pc)
        pc.on("connectionstatechange", self._connection_changed)
        pc.on("datachannel", self._datachannel)
        pc.on("track", self._track)
        before = asyncio.all_tasks()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            self._adopt(before)
            for t in pc.getTransceivers():  # audio the box will not play: tell the viewer
                if t.kind == "audio" and t.sender.track is None and not self._talk_allowed():
                    t.direction = "inactive"
            await within(pc.setLocalDescription(await pc.createAnswer()), ANSWER_S)
        except TimeoutError:
            raise LiveRefused("busy", "ICE gathering did not finish in time (TURN?)") from None
        except Exception as exc:  # ValueError, KeyError … and aiortc's own InternalError etc.
            raise LiveRefused("bad_offer", f"the SDP offer cannot be used: {exc}") from None
        finally:
            self._adopt(before)
        return str(pc.localDescription.sdp)

    def _adopt(self, before: set[asyncio.Task[Any]]) -> None:
        """Watch aiortc's fire-and-forget connect tasks started by the negotiation.

        aiortc starts ``RTCPeerConnection.__connect`` with ``ensure_future`` and never looks
        at it again; an offer that leaves a transceiver without transport makes it fail, and
        its error would surface only as "Task exception was never retrieved". Retrieving it
        here turns it into a log line; the session then never connects and the hub's idle
        timeout ends it like any other.
        """
        for task in asyncio.all_tasks() - before:
            if task.get_coro().__qualname__ in _AIORTC_BACKGROUND:  # type: ignore[union-attr]
                task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.info("live session %s: WebRTC connect failed: %r", self.id, task.exception())

    def _audio(self, pc: RTCPeerConnection) -> None:
        if self.audio is None:
            return
        self.listen = self.audio.listen_track()
        talk = self._talk_allowed()
        if self.listen is not None:
            pc.addTransceiver(self.listen, direction="sendrecv" if talk else "sendonly")
        elif talk:
            pc.addTransceiver("audio", direction="recvonly")

    def _talk_allowed(self) -> bool:
        return self.audio is not None and bool(self.audio.audio.talk_down)

    async def add_candidate(self, body: dict[str, Any]) -> None:
        """A trickled remote candidate (central consoles may send them after the offer)."""
        text = str(body.get("candidate") or "")
        if self.pc is None or not text:
            return
        text = text.split(":", 1)[1] if text.startswith("candidate:") else text
        problem = candidate_problem(text)
        if problem:
            raise ValueError(problem)
        cand = candidate_from_sdp(text)
        cand.sdpMid = body.get("sdpMid")
        cand.sdpMLineIndex = body.get("sdpMLineIndex")
        await self.pc.addIceCandidate(cand)

    # -- events ----------------------------------------------------------------------------------
    async def _connection_changed(self) -> None:
        assert self.pc is not None
        state = self.pc.connectionState
        log.debug("live session %s: connection %s", self.id, state)
        if state == "connected":
            self.idle_since = None
            self.connected_once = True
        elif state in ("disconnected", "failed") and self.idle_since is None:
            self.idle_since = time.monotonic()

    def _track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.audio is not None and self._talk_allowed():
            self.talking = bool(self.audio.talk(track, session=self.id))
            if not self.talking:
                log.info("live session %s: talk-down refused (speaker busy or off)", self.id)

    def _datachannel(self, channel: Any) -> None:
        if channel.label != "actions" or self.on_action is None:
            return
        self._spawn(self._serve_actions(channel))

        @channel.on("message")
        def _message(raw: str | bytes) -> None:
            try:
                self.actions.put_nowait((raw, channel))
            except asyncio.QueueFull:
                reply = {"id": None, "ok": False, "code": "busy", "reason": "too many actions"}
                channel.send(json.dumps(reply))

    async def _serve_actions(self, channel: Any) -> None:
        """One action at a time per session, in arrival order."""
        assert self.on_action is not None
        while self.closed is None:
            raw, chan = await self.actions.get()
            reply = await self.on_action(raw, self)
            if chan.readyState == "open":
                chan.send(json.dumps(reply))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("live session %s: task failed: %r", self.id, task.exception())

    # -- end -------------------------------------------------------------------------------------
    async def close(self, why: str) -> None:
        if self.closed is not None:
            return
        self.closed = why
        for task in list(self.tasks):
            task.cancel()
        if self.audio is not None:
            if self.listen is not None:
                self.audio.release(self.listen)
            if self.talking:
                self.audio.stop_talk(self.id)
        if self.track is not None:
            self.track.stop()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await within(self.pc.close(), 5.0)
        self.ended.set()

    def stats(self) -> dict[str, Any]:
        return self.track.stats() if self.track else {"frames": 0}


_H264 = ("video/h264", "video/rtx")
_AIORTC_BACKGROUND = ("RTCPeerConnection.__connect",)


def usable_candidates(sdp: str) -> str:
    """The offer without the candidates the box will not try.

    * ``.local`` (mDNS) ones: browsers hide their addresses behind mDNS names; resolving one
      takes aioice up to a second before the answer can be sent, and fails where multicast
      does not pass. The browser's connectivity checks reach the box's own candidates anyway,
      and the box learns the browser's real address from them (a peer-reflexive candidate).
    * malformed ones (a port outside 1-65535, an address that is not an IP literal, a
      transport other than UDP): aioice would send to them from a background task, whose
      failure nobody awaits (an SDP fuzz left such errors behind), so they are dropped here.
    """
    lines = sdp.splitlines()
    kept = [
        ln
        for ln in lines
        if not ln.startswith("a=candidate:") or candidate_problem(ln[len("a=candidate:") :]) is None
    ]
    return "\r\n".join(kept) + "\r\n" if len(kept) != len(lines) else sdp


def candidate_problem(text: str) -> str | None:
    """Why the candidate ``text`` (after ``candidate:``) is not tried, or None."""
    parts = text.split()
    if len(parts) < 8 or parts[6] != "typ":
        return "a candidate reads: foundation component transport priority address port typ …"
    transport, address, port = parts[2].lower(), parts[4], parts[5]
    if transport != "udp":
        return f"candidate transport {parts[2]!r} is not tried (UDP only)"
    if address.endswith(".local"):
        return "mDNS candidates are not resolved"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return f"candidate address {address[:64]!r} is not an IP address"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"candidate port {port[:16]!r} is not 1-65535"
    if not parts[1].isdigit() or not parts[3].isdigit():
        return "candidate component and priority must be numbers"
    return None
