"""The audio devices themselves: a microphone capture thread feeding listener tracks, and a
speaker playback thread fed from a bounded queue (see edge.video.live.audio for why these are
not aiortc.contrib.media's player, relay and recorder)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from edge.config.live import LiveAudio

log = logging.getLogger(__name__)

RATE = 48_000  # Opus's clock; ALSA "plug" devices convert to what the hardware does
FRAME_SAMPLES = 960  # 20 ms, one Opus packet
TIME_BASE = Fraction(1, RATE)
LISTEN_BACKLOG = 25  # frames a listener may lag (0.5 s) before its oldest audio is dropped
SPEAKER_BACKLOG = 25  # frames waiting for the speaker (0.5 s) before the oldest is dropped
HANDOVER_S = 2.0  # a new talk waits this long for the previous one to release the speaker
REOPEN_WAIT_S = 0.2  # a new capture waits this long for the previous one to close the device
JOIN_S = 2.0  # close(): how long to wait for each device thread
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
DEVICE_ERRORS = (av.error.FFmpegError, OSError, ValueError)


def use_system_alsa_config() -> None:
    """Point a bundled alsa-lib at the system's ALSA configuration.

    PyAV's wheels ship their own alsa-lib, which looks for its configuration under the
    wheel's build prefix: without this, every ALSA name ("default", "hw:1,0") is unknown.
    An ALSA_CONFIG_PATH set by the unit file or the user wins.
    """
    if "ALSA_CONFIG_PATH" not in os.environ and SYSTEM_ALSA_CONF.is_file():
        os.environ["ALSA_CONFIG_PATH"] = str(SYSTEM_ALSA_CONF)


def device_reason(exc: BaseException) -> str:
    """The OS / FFmpeg error in words (with FFmpeg's own message when PyAV kept it)."""
    detail = getattr(exc, "log", None)
    if isinstance(detail, tuple) and len(detail) == 3 and detail[2]:
        return f"{exc} ({str(detail[2]).strip()})"
    return str(exc) or type(exc).__name__


def device_hint(role: str, audio: LiveAudio) -> str:
    key = "microphone" if role == "microphone" else "speaker"
    if not audio.device_format:
        return f"live.audio.{key} names a file (device_format is empty): check the path"
    tool, example = ("arecord", "plughw:1,0") if role == "microphone" else ("aplay", "plughw:0,0")
    return (
        f"the device may not exist or another program may hold it: list the devices with "
        f"`{tool} -l`, then set live.audio.{key} (e.g. {example})"
    )


def call_in_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any
) -> bool:
    """From a device thread; False once the loop is closed (nobody listens any more)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def close_container(container: Any, device: str) -> None:
    try:
        container.close()
    except DEVICE_ERRORS as exc:
        log.warning("closing the audio device %r failed: %s", device, device_reason(exc))


class ListenTrack(MediaStreamTrack):
    """One viewer's copy of the microphone; stopping it detaches the viewer."""

    kind = "audio"

    def __init__(self, on_stop: Callable[[ListenTrack], None]) -> None:
        super().__init__()
        self.frames: collections.deque[av.AudioFrame] = collections.deque(maxlen=LISTEN_BACKLOG)
        self.dropped = 0
        self._on_stop: Callable[[ListenTrack], None] | None = on_stop
        self._source_ended = False
        self._wake = asyncio.Event()

    def put(self, frame: av.AudioFrame) -> None:
        if len(self.frames) == LISTEN_BACKLOG:
            self.dropped += 1
        self.frames.append(frame)
        self._wake.set()

    def end(self) -> None:
        """The microphone stopped: recv() ends after what is queued."""
        self._source_ended = True
        self._wake.set()

    async def recv(self) -> av.AudioFrame:
        while self.readyState == "live" and not self.frames:
            if self._source_ended:
                self.stop()
                break
            self._wake.clear()
            await self._wake.wait()
        if self.readyState != "live":
            raise MediaStreamError
        return self.frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._wake.set()
        on_stop, self._on_stop = self._on_stop, None
        if on_stop is not None:
            on_stop(self)


class Capture:
    """The microphone read in a thread and fanned out to the listeners, in the event loop."""

    def __init__(
        self, container: Any, device: str, paced: bool, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.device = device
        self.listeners: set[ListenTrack] = set()
        self.ended = False  # set in the loop once the thread reported its end
        self._container = container
        self._paced = paced  # a file is read at real-time pace; a device paces itself
        self._loop = loop
        self._quit = threading.Event()
        self.thread = threading.Thread(target=self._run, name="microphone", daemon=True)

    def stop(self) -> None:
        """Release the device (the thread closes it after its current read)."""
        self._quit.set()
        self._finish()

    def _run(self) -> None:
        try:
            self._read()
        except DEVICE_ERRORS as exc:
            reason = device_reason(exc)
            log.warning("listen-in stopped: microphone %r failed: %s", self.device, reason)
        finally:
            close_container(self._container, self.device)
            call_in_loop(self._loop, self._finish)

    def _read(self) -> None:
        resampler = av.AudioResampler(
            format="s16", layout="mono", rate=RATE, frame_size=FRAME_SAMPLES
        )
        samples = 0
        start = time.monotonic()
        for frame in self._container.decode(audio=0):
            if self._quit.is_set():
                return
            frame.pts = None  # FFmpeg's device clock is irrelevant: we count samples
            for out in resampler.resample(frame):
                if self._paced:
                    wait = start + samples / RATE - time.monotonic()
                    if wait > 0 and self._quit.wait(wait):
                        return
                out.pts, out.time_base = samples, TIME_BASE
                samples += out.samples
                if not call_in_loop(self._loop, self._deliver, out):
                    return

    def _deliver(self, frame: av.AudioFrame) -> None:
        for listener in self.listeners:
            listener.put(frame)

    def _finish(self) -> None:
        self.ended = True
        for listener in self.listeners:
            listener.end()


class Speaker:
    """One talk's playback: frames queued by the event loop, written by a thread."""

    def __init__(
        self,
        audio: LiveAudio,
        session: str,
        previous: threading.Thread | None,
        on_end: Callable[[Speaker], None],
    ) -> None:
        self.frames: queue.Queue[av.AudioFrame] = queue.Queue(SPEAKER_BACKLOG)
        self.dropped = 0
        self.samples = 0
        self._audio = audio
        self._session = session
        self._previous = previous
        self._loop = asyncio.get_running_loop()
        self._on_end = on_end
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"speaker-{session}", daemon=True)

    def put(self, frame: av.AudioFrame) -> None:
        """Queue a frame, dropping the oldest when the device does not keep up."""
        while True:
            try:
                return self.frames.put_nowait(frame)
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self.frames.get_nowait()
                    self.dropped += 1

    def stop(self) -> None:
        """Play what is queued (at most SPEAKER_BACKLOG frames), then release the device."""
        self._stop.set()

    def _run(self) -> None:
        try:
            if self._previous is not None:
                self._previous.join(HANDOVER_S)
                if self._previous.is_alive():
                    log.warning(
                        "talk-down for session %s: the speaker %r is still held by the "
                        "previous talk; try again",
                        self._session,
                        self._audio.speaker,
                    )
                    return
            if not self._stop.is_set():
                self._play()
        finally:
            call_in_loop(self._loop, self._on_end, self)

    def _play(self) -> None:
        audio = self._audio
        container = None
        try:
            container = av.open(audio.speaker, mode="w", format=audio.device_format or None)
            stream = container.add_stream("pcm_s16le", rate=RATE, layout="stereo")
            container.start_encoding()  # opens the device now, not at the first frame
        except DEVICE_ERRORS as exc:
            log.warning(
                "talk-down for session %s plays nothing: cannot open the speaker %r (%s): %s; %s",
                self._session,
                audio.speaker,
                audio.device_format or "file",
                device_reason(exc),
                device_hint("speaker", audio),
            )
            if container is not None:
                close_container(container, audio.speaker)
            return
        try:
            self._write(container, stream)
            container.mux(stream.encode(None))
        except DEVICE_ERRORS as exc:
            reason = device_reason(exc)
            log.warning("talk-down stopped: speaker %r failed: %s", audio.speaker, reason)
        finally:
            close_container(container, audio.speaker)

    def _write(self, container: Any, stream: Any) -> None:
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
        while True:
            try:
                frame = self.frames.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            frame.pts = None  # RTP timestamps jump on loss; the speaker wants a steady count
            for out in resampler.resample(frame):
                out.pts, out.time_base = self.samples, TIME_BASE
                self.samples += out.samples
                container.mux(stream.encode(out))
