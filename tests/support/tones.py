"""Sine tones standing in for a microphone and an operator's voice, and their analysis.

A pure tone survives Opus and resampling with its frequency intact, so "the dominant
frequency at the far end" proves the audio went through the whole path, not just that
some bytes arrived.
"""

from __future__ import annotations

import asyncio
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import AUDIO_PTIME, AudioStreamTrack, MediaStreamError

AMPLITUDE = 0.5  # of full scale: loud, far from clipping


def sine(freq_hz: float, samples: int, rate: int, start: int = 0) -> npt.NDArray[np.int16]:
    """``samples`` of a sine starting at sample index ``start`` (phase-continuous across calls)."""
    t = (np.arange(samples) + start) / rate
    return (np.sin(2 * np.pi * freq_hz * t) * AMPLITUDE * 32767).astype(np.int16)


def write_tone_wav(path: Path, freq_hz: float, seconds: float, rate: int = 48_000) -> Path:
    """A mono 16-bit WAV file holding one tone."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(sine(freq_hz, int(seconds * rate), rate).tobytes())
    return path


def read_wav(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """The first channel of a 16-bit WAV file, and its rate."""
    with wave.open(str(path), "rb") as wav:
        channels, rate = wav.getnchannels(), wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return data.reshape(-1, channels)[:, 0].astype(np.float64), rate


def dominant_hz(samples: npt.NDArray[np.float64], rate: int) -> float:
    """The frequency of the strongest spectral peak (Hann window against leakage)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(samples))


def tone_ratio(
    samples: npt.NDArray[np.float64], rate: int, freq_hz: float, other_hz: float
) -> float:
    """Spectral power within ±10 Hz of ``other_hz`` relative to that around ``freq_hz``.

    Near zero when only ``freq_hz`` is heard: proves that a second source was kept out.
    """
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    hz = np.fft.rfftfreq(len(samples), 1 / rate)

    def band(centre: float) -> float:
        return float(spectrum[np.abs(hz - centre) <= 10].sum())

    return band(other_hz) / max(band(freq_hz), 1e-9)


def frame_samples(frame: av.AudioFrame) -> npt.NDArray[np.float64]:
    """The first channel of an s16 frame, packed (stereo interleaved) or planar."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        return data[0].astype(np.float64)
    channels = len(frame.layout.channels)
    return data.reshape(-1, channels)[:, 0].astype(np.float64)


class ToneTrack(AudioStreamTrack):
    """An operator's microphone playing one tone: 20 ms mono frames at real-time pace."""

    def __init__(self, freq_hz: float, rate: int = 48_000) -> None:
        super().__init__()
        self.freq_hz = freq_hz
        self.rate = rate
        self.sent = 0  # samples produced so far
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        count = int(AUDIO_PTIME * self.rate)
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            await asyncio.sleep(self._t0 + self.sent / self.rate - time.monotonic())
        pcm = sine(self.freq_hz, count, self.rate, start=self.sent)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.sent
        frame.time_base = Fraction(1, self.rate)
        self.sent += count
        return frame
