"""Listen-in and talk-down through real aiortc peers on loopback.

The box's microphone and speaker are WAV files (``device_format`` empty): everything between
them and the operator — capture thread, fan-out, Opus, RTP, decoding, playback thread — is the
real code.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack
from support.tones import (
    ToneTrack,
    dominant_hz,
    frame_samples,
    read_wav,
    tone_ratio,
    write_tone_wav,
)

from edge.config.live import LiveAudio
from edge.tasks import within
from edge.video.live.audio import AudioDevices

RATE = 48_000
LOG = "edge.video.live.audio"


def peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def negotiate(
    client: RTCPeerConnection,
    box: RTCPeerConnection,
    prepare_box: Callable[[], object] | None = None,
) -> None:
    """The viewer offers, the box answers (as in WHEP and the MQTT signalling)."""
    await client.setLocalDescription(await client.createOffer())
    await box.setRemoteDescription(client.localDescription)
    if prepare_box is not None:
        prepare_box()
    await box.setLocalDescription(await box.createAnswer())
    await client.setRemoteDescription(box.localDescription)


async def collect(
    track: MediaStreamTrack, seconds: float, skip: float = 0.2
) -> npt.NDArray[np.float64]:
    """``seconds`` of decoded audio after skipping the codec's start-up."""
    chunks: list[npt.NDArray[np.float64]] = []
    have = -int(skip * RATE)
    while have < seconds * RATE:
        frame = await within(track.recv(), 5)
        assert isinstance(frame, av.AudioFrame)
        samples = frame_samples(frame)
        if have >= 0:
            chunks.append(samples)
        have += len(samples)
    return np.concatenate(chunks)


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def operator_talks(
    devices: AudioDevices, freq: float, session: str
) -> tuple[RTCPeerConnection, RTCPeerConnection, MediaStreamTrack, bool]:
    """An operator sending a tone; the box hands the incoming track to ``devices.talk``."""
    box, operator = peer(), peer()
    operator.addTrack(ToneTrack(freq))
    arrived: asyncio.Future[tuple[MediaStreamTrack, bool]] = (
        asyncio.get_running_loop().create_future()
    )

    @box.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        arrived.set_result((track, devices.talk(track, session=session)))

    await negotiate(operator, box)
    track, accepted = await within(arrived, 5)
    return box, operator, track, accepted


async def close_all(*pcs: RTCPeerConnection) -> None:
    await asyncio.gather(*(pc.close() for pc in pcs))


def run(main: Callable[[], Coroutine[object, object, None]]) -> None:
    asyncio.run(main())


def test_listen_in_reaches_two_viewers_from_one_capture(tmp_path: Path) -> None:
    mic = write_tone_wav(tmp_path / "mic.wav", 440, seconds=10)
    devices = AudioDevices(LiveAudio(listen_in=True, microphone=str(mic), device_format=None))

    async def main() -> None:
        pcs: list[RTCPeerConnection] = []
        box_tracks: list[MediaStreamTrack] = []
        received: list[asyncio.Future[MediaStreamTrack]] = []
        for _ in range(2):
            box, viewer = peer(), peer()
            pcs += [box, viewer]
            viewer.addTransceiver("audio", direction="recvonly")
            fut: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
            viewer.on("track", fut.set_result)
            received.append(fut)
            listen = devices.listen_track()
            assert listen is not None
            box_tracks.append(listen)
            await negotiate(viewer, box, functools.partial(box.addTrack, listen))
        assert devices.mic_opens == 1
        assert devices.listeners == 2
        assert devices.microphone_open

        tracks = [await within(f, 5) for f in received]
        heard = await asyncio.gather(*(collect(t, 0.5) for t in tracks))
        for samples in heard:
            assert abs(dominant_hz(samples, RATE) - 440) <= 10
            assert np.sqrt(np.mean(samples**2)) > 1000  # a real tone, not near-silence

        devices.release(box_tracks[0])
        assert devices.listeners == 1
        assert devices.microphone_open  # the other viewer still listens
        devices.release(box_tracks[1])
        devices.release(box_tracks[1])  # idempotent
        assert devices.listeners == 0
        assert await eventually(lambda: not devices.microphone_open)

        # The next viewer opens the microphone again.
        again = devices.listen_track()
        assert again is not None and devices.mic_opens == 2
        devices.release(again)
        await close_all(*pcs)
        await devices.close()
        assert not devices.microphone_open

    run(main)


def test_listen_in_off_gives_no_track(tmp_path: Path) -> None:
    mic = write_tone_wav(tmp_path / "mic.wav", 440, seconds=1)
    devices = AudioDevices(LiveAudio(listen_in=False, microphone=str(mic), device_format=None))

    async def main() -> None:
        assert devices.listen_track() is None
        assert devices.mic_opens == 0
        await devices.close()

    run(main)


@pytest.mark.parametrize(
    ("microphone", "device_format", "hint"),
    [
        ("/nonexistent/mic.wav", None, "names a file"),
        ("no_such_card_xyz", "alsa", "arecord -l"),
    ],
)
def test_missing_microphone_gives_no_track_and_one_warning(
    microphone: str, device_format: str | None, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    audio = LiveAudio(listen_in=True, microphone=microphone, device_format=device_format)
    devices = AudioDevices(audio)

    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger=LOG):
            assert devices.listen_track() is None
            assert devices.listen_track() is None  # the next viewer: no second warning
        await devices.close()

    run(main)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert microphone in warnings[0] and hint in warnings[0]
    assert devices.mic_opens == 0 and not devices.microphone_open


def test_talk_down_plays_one_operator_at_a_time(tmp_path: Path) -> None:
    speaker = tmp_path / "speaker.wav"
    devices = AudioDevices(LiveAudio(talk_down=True, speaker=str(speaker), device_format=None))

    async def main() -> None:
        box1, op1, _, accepted1 = await operator_talks(devices, 880, "s1")
        assert accepted1 and devices.talker == "s1"
        box2, op2, track2, accepted2 = await operator_talks(devices, 660, "s2")
        assert not accepted2 and devices.talker == "s1"

        await asyncio.sleep(1.5)
        # The refused operator's audio is read and dropped, not piled up in aiortc.
        assert track2._queue.qsize() < 10  # type: ignore[attr-defined]
        assert devices.stop_talk("s1")
        assert not devices.stop_talk("s1")
        assert devices.talker is None
        assert await eventually(lambda: not devices.speaker_open)

        first, rate = read_wav(speaker)
        assert rate == RATE and len(first) >= 0.8 * RATE
        assert abs(dominant_hz(first[-RATE // 2 :], rate) - 880) <= 10
        assert tone_ratio(first, rate, 880, other_hz=660) < 0.01  # s2 was not mixed in

        # Push to talk: the refused operator's track now gets the speaker.
        assert devices.talk(track2, session="s2") and devices.talker == "s2"
        await asyncio.sleep(1.0)
        await close_all(box1, op1, box2, op2)  # the track ends: the talk ends with it
        assert await eventually(lambda: devices.talker is None and not devices.speaker_open)
        await devices.close()

    run(main)
    second, rate = read_wav(speaker)
    assert len(second) >= 0.5 * RATE
    assert abs(dominant_hz(second[-RATE // 4 :], rate) - 660) <= 10
    assert tone_ratio(second, rate, 660, other_hz=880) < 0.01  # s1's audio no longer plays


def test_talk_down_off_refuses_and_writes_nothing(tmp_path: Path) -> None:
    speaker = tmp_path / "speaker.wav"
    devices = AudioDevices(LiveAudio(talk_down=False, speaker=str(speaker), device_format=None))

    async def main() -> None:
        box, operator, track, accepted = await operator_talks(devices, 880, "s1")
        assert not accepted and devices.talker is None
        await asyncio.sleep(0.5)
        assert track._queue.qsize() < 10  # type: ignore[attr-defined]
        await close_all(box, operator)
        await devices.close()

    run(main)
    assert not speaker.exists()


def test_missing_speaker_frees_the_talker_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = LiveAudio(talk_down=True, speaker="no_such_card_xyz", device_format="alsa")
    devices = AudioDevices(audio)

    async def main() -> None:
        tone = ToneTrack(880)
        with caplog.at_level(logging.WARNING, logger=LOG):
            assert devices.talk(tone, session="s1")  # accepted; the device fails in its thread
            assert await eventually(lambda: devices.talker is None)
        # Another operator may try (and the session is not harmed).
        assert devices.talk(ToneTrack(660), session="s2")
        await devices.close()
        assert devices.talker is None and not devices.speaker_open

    run(main)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "no_such_card_xyz" in warnings[0] and "aplay -l" in warnings[0]
