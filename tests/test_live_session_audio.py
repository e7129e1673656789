"""Audio through a whole live session: the hub grants a session, the operator's peer offers
video + audio (send-receive), hears the box microphone and talks to the box speaker. The
devices are WAV files at the device boundary; everything else is the real session code."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from support.tones import ToneTrack, dominant_hz, frame_samples, read_wav, write_tone_wav

from edge.config import SiteConfig
from edge.video.live.audio import AudioDevices
from edge.video.live.feed import LiveFeed
from edge.video.live.hub import LiveHub


def site(tmp: Path, **audio: Any) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s-audio", "name": "audio"},
            "video": {"cameras": [{"id": "yard", "source": "synthetic", "url": "walker"}]},
            "live": {"policy": "always", "audio": {"device_format": None, **audio}},
        }
    )


async def session_audio(tmp: Path) -> tuple[float, Path, bool]:
    mic = write_tone_wav(tmp / "mic.wav", 440, 4.0)
    speaker = tmp / "speaker.wav"
    cfg = site(tmp, listen_in=True, talk_down=True, microphone=str(mic), speaker=str(speaker))
    devices = AudioDevices(cfg.live.audio)
    reports: list[dict[str, Any]] = []
    hub = LiveHub(
        cfg,
        {"yard": LiveFeed("yard")},
        lambda cid: [],
        lambda cid: True,
        lambda cam, body: reports.append(body),
        audio=devices,
    )
    hub.grant(session="s1", camera="yard", operator="op-1", reason="", via="central")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver(ToneTrack(880), direction="sendrecv")
    heard: list[np.ndarray[Any, Any]] = []

    async def listen(track: Any) -> None:
        try:
            while True:
                heard.append(frame_samples(await track.recv()))
        except MediaStreamError:
            return

    tasks = []
    pc.on(
        "track",
        lambda t: tasks.append(asyncio.ensure_future(listen(t))) if t.kind == "audio" else None,
    )
    await pc.setLocalDescription(await pc.createOffer())
    answer = await hub.offer("s1", pc.localDescription.sdp)
    assert "opus" in answer.lower()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.sleep(2.0)
    talking = devices.talker == "s1"
    await hub.close("s1", "viewer hung up")
    await pc.close()
    for task in tasks:
        task.cancel()
    await devices.close()
    samples = np.concatenate(heard[-25:]) if heard else np.zeros(1)
    return dominant_hz(samples, 48_000), speaker, talking


def test_a_session_hears_the_microphone_and_talks_to_the_speaker(tmp_path: Path) -> None:
    heard_hz, speaker, talking = asyncio.run(session_audio(tmp_path))
    assert abs(heard_hz - 440) <= 10, f"the operator heard {heard_hz:.0f} Hz, not the 440 Hz mic"
    assert talking, "the operator's audio track did not get the speaker"
    played, rate = read_wav(speaker)
    assert len(played) >= rate // 2, "less than 0.5 s reached the speaker"
    assert abs(dominant_hz(played, rate) - 880) <= 10
