"""A central-station viewer: an aiortc peer that receives a live camera and measures it.

The viewer plays the central console's part, so instrumenting it is fair game: it records
the H.264 access units exactly as they came out of the RTP depayloader (before decoding), so
a test can prove the box sent the camera's own bytes, and the time of the first decoded
frame. The box under test is never patched.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiortc.rtcrtpreceiver as receiver
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

_capture_lock = threading.Lock()
_captures: list[list[bytes]] = []


class _Recording:
    """Wraps aiortc's decoder: keeps a copy of each encoded frame, then decodes it."""

    def __init__(self, decoder: Any, sink: list[bytes]) -> None:
        self.decoder = decoder
        self.sink = sink

    def decode(self, encoded_frame: Any) -> Any:
        self.sink.append(bytes(encoded_frame.data))
        return self.decoder.decode(encoded_frame)


@contextlib.contextmanager
def recording_decoders() -> Iterator[list[bytes]]:
    """Every video access unit received by viewers created inside the block."""
    sink: list[bytes] = []
    original = receiver.get_decoder

    def get_decoder(codec: Any) -> Any:
        decoder = original(codec)
        return _Recording(decoder, sink) if codec.mimeType.lower() == "video/h264" else decoder

    with _capture_lock:
        receiver.get_decoder = get_decoder
        try:
            yield sink
        finally:
            receiver.get_decoder = original


class Viewer:
    """One receive-only viewer; call offer(), then accept(answer), then read the stats."""

    def __init__(self, *, audio: bool = False, actions: bool = False) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("actions") if actions else None
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        if self.channel is not None:
            self.channel.on("message", self.replies.put_nowait)
        self.started = 0.0
        self.first_frame_at: float | None = None
        self.frames: list[tuple[float, int, int]] = []
        self.first_frame = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._track)

    async def offer(self) -> str:
        self.started = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    def _track(self, track: Any) -> None:
        if track.kind == "video":
            self.tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if self.first_frame_at is None:
                    self.first_frame_at = now
                    self.first_frame.set()
                self.frames.append((now, frame.width, frame.height))

    @property
    def ttff_s(self) -> float | None:
        return None if self.first_frame_at is None else self.first_frame_at - self.started

    async def action(self, body: str, timeout: float = 10.0) -> str:
        assert self.channel is not None
        if self.channel.readyState != "open":
            opened = asyncio.Event()
            self.channel.on("open", opened.set)
            await asyncio.wait_for(opened.wait(), timeout)
        self.channel.send(body)
        return await asyncio.wait_for(self.replies.get(), timeout)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
