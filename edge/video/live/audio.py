"""Listen-in (box microphone → viewers) and talk-down (operator's audio → box speaker).

The devices are opened through PyAV, FFmpeg's ALSA input and output by default; with an empty
``device_format`` they are plain files, which is how tests and recorded messages use them.

aiortc.contrib.media has a player, a relay and a recorder, but not with the guarantees a
box needs, so this module holds small equivalents:

- MediaPlayer queues decoded frames without bound and joins its thread on the event loop;
  MediaRelay gives each consumer an unbounded queue and keeps reading its source after the
  last consumer left, so the microphone would never be released. Here one capture thread
  per microphone is opened for the first listener and closed with the last one, and each
  listener has a bounded queue that drops its oldest audio (live audio wants low latency
  more than completeness).
- MediaRecorder encodes and writes on the event loop: a blocking ALSA write would stall
  every session. Here each talk has a playback thread fed through a bounded queue.
- aiortc's receiving track queues frames without bound until someone reads them, so every
  audio track handed to :meth:`AudioDevices.talk` is read until it ends, whether it is
  playing, was refused, or was stopped.

A missing or busy device never fails a session: the session simply has no listen-in, or
plays nothing, and one warning says which device failed and how to fix it.
"""

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
from dataclasses import dataclass
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
_DEVICE_ERRORS = (av.error.FFmpegError, OSError, ValueError)


def _use_system_alsa_config() -> None:
    """Point a bundled alsa-lib at the system's ALSA configuration.

    PyAV's wheels ship their own alsa-lib, which looks for its configuration under the
    wheel's build prefix: without this, every ALSA name ("default", "hw:1,0") is unknown.
    An ALSA_CONFIG_PATH set by the unit file or the user wins.
    """
    if "ALSA_CONFIG_PATH" not in os.environ and SYSTEM_ALSA_CONF.is_file():
        os.environ["ALSA_CONFIG_PATH"] = str(SYSTEM_ALSA_CONF)


def _reason(exc: BaseException) -> str:
    """The OS / FFmpeg error in words (with FFmpeg's own message when PyAV kept it)."""
    detail = getattr(exc, "log", None)
    if isinstance(detail, tuple) and len(detail) == 3 and detail[2]:
        return f"{exc} ({str(detail[2]).strip()})"
    return str(exc) or type(exc).__name__


def _hint(role: str, audio: LiveAudio) -> str:
    key = "microphone" if role == "microphone" else "speaker"
    if not audio.device_format:
        return f"live.audio.{key} names a file (device_format is empty): check the path"
    tool, example = ("arecord", "plughw:1,0") if role == "microphone" else ("aplay", "plughw:0,0")
    return (
        f"the device may not exist or another program may hold it: list the devices with "
        f"`{tool} -l`, then set live.audio.{key} (e.g. {example})"
    )


def _call_in_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any
) -> bool:
    """From a device thread; False once the loop is closed (nobody listens any more)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def _close(container: Any, device: str) -> None:
    try:
        container.close()
    except _DEVICE_ERRORS as exc:
        log.warning("closing the audio device %r failed: %s", device, _reason(exc))


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


class _Capture:
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
        except _DEVICE_ERRORS as exc:
            log.warning("listen-in stopped: microphone %r failed: %s", self.device, _reason(exc))
        finally:
            _close(self._container, self.device)
            _call_in_loop(self._loop, self._finish)

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
                if not _call_in_loop(self._loop, self._deliver, out):
                    return

    def _deliver(self, frame: av.AudioFrame) -> None:
        for listener in self.listeners:
            listener.put(frame)

    def _finish(self) -> None:
        self.ended = True
        for listener in self.listeners:
            listener.end()


class _Speaker:
    """One talk's playback: frames queued by the event loop, written by a thread."""

    def __init__(
        self,
        audio: LiveAudio,
        session: str,
        previous: threading.Thread | None,
        on_end: Callable[[_Speaker], None],
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
            _call_in_loop(self._loop, self._on_end, self)

    def _play(self) -> None:
        audio = self._audio
        container = None
        try:
            container = av.open(audio.speaker, mode="w", format=audio.device_format or None)
            stream = container.add_stream("pcm_s16le", rate=RATE, layout="stereo")
            container.start_encoding()  # opens the device now, not at the first frame
        except _DEVICE_ERRORS as exc:
            log.warning(
                "talk-down for session %s plays nothing: cannot open the speaker %r (%s): %s; %s",
                self._session,
                audio.speaker,
                audio.device_format or "file",
                _reason(exc),
                _hint("speaker", audio),
            )
            if container is not None:
                _close(container, audio.speaker)
            return
        try:
            self._write(container, stream)
            container.mux(stream.encode(None))
        except _DEVICE_ERRORS as exc:
            log.warning("talk-down stopped: speaker %r failed: %s", audio.speaker, _reason(exc))
        finally:
            _close(container, audio.speaker)

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


@dataclass
class _Talk:
    session: str
    track: MediaStreamTrack
    speaker: _Speaker


class AudioDevices:
    """The box's microphone and speaker as the live sessions share them.

    All methods are called from the event loop. One capture feeds every listener; one
    session at a time talks through the speaker.
    """

    def __init__(self, audio: LiveAudio) -> None:
        self.audio = audio
        self.mic_opens = 0  # how many times the microphone was opened (one per capture)
        self._capture: _Capture | None = None
        self._talk: _Talk | None = None
        self._last_speaker: _Speaker | None = None
        self._threads: list[threading.Thread] = []
        self._drains: dict[MediaStreamTrack, asyncio.Task[None]] = {}
        self._mic_warning: str | None = None
        if audio.device_format == "alsa":
            _use_system_alsa_config()

    @property
    def talker(self) -> str | None:
        """The session whose operator is on the speaker, None when nobody talks."""
        return self._talk.session if self._talk is not None else None

    @property
    def listeners(self) -> int:
        return len(self._capture.listeners) if self._capture is not None else 0

    @property
    def microphone_open(self) -> bool:
        """True while a capture thread holds (or is still closing) the microphone."""
        return any(t.is_alive() and t.name == "microphone" for t in self._threads)

    @property
    def speaker_open(self) -> bool:
        """True while a playback thread holds (or is still closing) the speaker."""
        return any(t.is_alive() and t.name.startswith("speaker-") for t in self._threads)

    def listen_track(self) -> MediaStreamTrack | None:
        """A new viewer's microphone track; None when listen-in is off or the device fails."""
        if not self.audio.listen_in:
            return None
        capture = self._capture
        if capture is None or capture.ended:
            capture = self._open_capture()
            if capture is None:
                return None
        track = ListenTrack(self._listener_stopped)
        capture.listeners.add(track)
        return track

    def release(self, track: MediaStreamTrack | None) -> None:
        """A viewer left; the microphone is closed with the last listener. Idempotent."""
        if isinstance(track, ListenTrack):
            track.stop()

    def talk(self, track: MediaStreamTrack, *, session: str) -> bool:
        """Play an operator's audio track on the speaker until it ends or stop_talk(session).

        False when talk-down is off or another session talks: the track is then read and
        discarded until it ends, and may be passed again later (push to talk). True means
        the talk was accepted; a speaker that cannot be opened logs a warning and frees
        the talker slot again. Non-audio tracks are refused and left alone.
        """
        if track.kind != "audio":
            return False
        self._drain(track)
        if not self.audio.talk_down:
            log.info("talk-down refused for session %s: live.audio.talk_down is off", session)
            return False
        current = self._talk
        if current is not None:
            if current.session != session:
                log.info(
                    "talk-down refused for session %s: session %s is talking",
                    session,
                    current.session,
                )
                return False
            if current.track is track:
                return True
            self._end_talk()  # the same operator with a new track (renegotiation)
        previous = self._last_speaker.thread if self._last_speaker is not None else None
        speaker = _Speaker(self.audio, session, previous, self._speaker_ended)
        self._last_speaker = speaker
        self._talk = _Talk(session, track, speaker)
        self._keep(speaker.thread)
        speaker.thread.start()
        log.info("talk-down: session %s on the speaker %r", session, self.audio.speaker)
        return True

    def stop_talk(self, session: str) -> bool:
        """End a session's talk (its track is still drained); False when it was not talking."""
        if self._talk is None or self._talk.session != session:
            return False
        self._end_talk()
        return True

    async def close(self) -> None:
        """Stop every listener and talk and wait (bounded) for the devices to be released."""
        if self._talk is not None:
            self._end_talk()
        capture, self._capture = self._capture, None
        if capture is not None:
            for listener in list(capture.listeners):
                listener.stop()
            capture.stop()
        drains = list(self._drains.values())
        for task in drains:
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, JOIN_S)
            if thread.is_alive():
                log.warning(
                    "audio device thread %s did not stop within %.0f s", thread.name, JOIN_S
                )

    # listen-in

    def _open_capture(self) -> _Capture | None:
        for thread in self._threads:
            if thread.name == "microphone":
                thread.join(REOPEN_WAIT_S)  # the last capture is still closing the device
        container = self._open_microphone()
        if container is None:
            return None
        self._mic_warning = None
        self.mic_opens += 1
        capture = _Capture(
            container,
            self.audio.microphone,
            not self.audio.device_format,
            asyncio.get_running_loop(),
        )
        self._capture = capture
        self._keep(capture.thread)
        capture.thread.start()
        log.info("listen-in: microphone %r open", self.audio.microphone)
        return capture

    def _open_microphone(self) -> Any:
        audio = self.audio
        fmt = audio.device_format or None
        # Microphones are mono; 48 kHz spares a resampling step before Opus.
        options = {"sample_rate": str(RATE), "channels": "1"} if fmt == "alsa" else {}
        try:
            container = av.open(audio.microphone, format=fmt, container_options=options)
        except _DEVICE_ERRORS as exc:
            self._warn_microphone(_reason(exc))
            return None
        if not container.streams.audio:
            container.close()
            self._warn_microphone("it has no audio stream")
            return None
        return container

    def _warn_microphone(self, reason: str) -> None:
        """One warning per distinct failure: every new viewer retries, the log stays readable."""
        if reason == self._mic_warning:
            log.debug("listen-in still unavailable: %s", reason)
            return
        self._mic_warning = reason
        log.warning(
            "listen-in unavailable: cannot open the microphone %r (%s): %s; %s",
            self.audio.microphone,
            self.audio.device_format or "file",
            reason,
            _hint("microphone", self.audio),
        )

    def _listener_stopped(self, track: ListenTrack) -> None:
        capture = self._capture
        if capture is None or track not in capture.listeners:
            return
        capture.listeners.discard(track)
        if not capture.listeners:
            capture.stop()
            self._capture = None
            log.info("listen-in: last listener left, microphone %r closed", self.audio.microphone)

    # talk-down

    def _drain(self, track: MediaStreamTrack) -> None:
        if track not in self._drains:
            self._drains[track] = asyncio.create_task(self._consume(track), name="talk-down-read")

    async def _consume(self, track: MediaStreamTrack) -> None:
        """Read a track until it ends; its frames go to the speaker while it is the talker."""
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                talk = self._talk
                if talk is not None and talk.track is track and isinstance(frame, av.AudioFrame):
                    talk.speaker.put(frame)
        finally:
            self._drains.pop(track, None)
            if self._talk is not None and self._talk.track is track:
                self._end_talk()

    def _end_talk(self) -> None:
        talk, self._talk = self._talk, None
        if talk is not None:
            talk.speaker.stop()
            log.info(
                "talk-down: session %s ended (%d frames dropped)",
                talk.session,
                talk.speaker.dropped,
            )

    def _speaker_ended(self, speaker: _Speaker) -> None:
        """The playback thread ended (device failure included): free the talker slot."""
        if self._talk is not None and self._talk.speaker is speaker:
            self._talk = None

    def _keep(self, thread: threading.Thread) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
