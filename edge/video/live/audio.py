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
import logging
import threading
from dataclasses import dataclass
from typing import Any

import av
import av.error
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from edge.config.live import LiveAudio
from edge.video.live.audio_io import (
    DEVICE_ERRORS,
    JOIN_S,
    RATE,
    REOPEN_WAIT_S,
    Capture,
    ListenTrack,
    Speaker,
    device_hint,
    device_reason,
    use_system_alsa_config,
)

log = logging.getLogger(__name__)


@dataclass
class _Talk:
    session: str
    track: MediaStreamTrack
    speaker: Speaker


class AudioDevices:
    """The box's microphone and speaker as the live sessions share them.

    All methods are called from the event loop. One capture feeds every listener; one
    session at a time talks through the speaker.
    """

    def __init__(self, audio: LiveAudio) -> None:
        self.audio = audio
        self.mic_opens = 0  # how many times the microphone was opened (one per capture)
        self._capture: Capture | None = None
        self._talk: _Talk | None = None
        self._last_speaker: Speaker | None = None
        self._threads: list[threading.Thread] = []
        self._drains: dict[MediaStreamTrack, asyncio.Task[None]] = {}
        self._mic_warning: str | None = None
        if audio.device_format == "alsa":
            use_system_alsa_config()

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
        speaker = Speaker(self.audio, session, previous, self._speaker_ended)
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

    def _open_capture(self) -> Capture | None:
        for thread in self._threads:
            if thread.name == "microphone":
                thread.join(REOPEN_WAIT_S)  # the last capture is still closing the device
        container = self._open_microphone()
        if container is None:
            return None
        self._mic_warning = None
        self.mic_opens += 1
        capture = Capture(
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
        except DEVICE_ERRORS as exc:
            self._warn_microphone(device_reason(exc))
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
            device_hint("microphone", self.audio),
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

    def _speaker_ended(self, speaker: Speaker) -> None:
        """The playback thread ended (device failure included): free the talker slot."""
        if self._talk is not None and self._talk.speaker is speaker:
            self._talk = None

    def _keep(self, thread: threading.Thread) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
