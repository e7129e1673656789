"""What every camera source produces: encoded H.264 packets and low-resolution luma frames.

Packets are passed through untouched wherever the camera encodes (RTSP, picamera2's
encoder), so clips and live view never re-encode. Luma frames are for analysis only (motion,
camera health) and are small: about 160-180 rows.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import numpy.typing as npt


@dataclasses.dataclass(frozen=True)
class EncodedPacket:
    """One H.264 access unit in Annex-B form; keyframes carry their SPS/PPS in front."""

    camera: str
    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


@dataclasses.dataclass(frozen=True)
class LumaFrame:
    """A decimated luma (Y) plane for analysis; ``y`` is uint8, rows x columns."""

    camera: str
    pts: int
    time_base: Fraction
    y: npt.NDArray[np.uint8]

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


def nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B buffer, without start codes or trailing zero bytes."""
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        j = data.find(b"\x00\x00\x01", i + 3)
        # A NAL unit ends with a non-zero byte: zeros before the next start code are padding
        # or the first byte of a 4-byte start code.
        nal = data[i + 3 : len(data) if j < 0 else j].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        i = j
    return nals
