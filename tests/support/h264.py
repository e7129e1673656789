"""Real H.264 for tests: synthetic pictures encoded with libx264 into EncodedPacket lists.

The pictures are a grey background with a white square that moves 8 pixels right per frame,
so a decoded picture tells which frame it is. Keyframes come every ``gop`` frames exactly,
and each carries its SPS/PPS in front (``repeat-headers``), like a camera's Annex-B stream.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from edge.video.frames import EncodedPacket

WIDTH, HEIGHT = 320, 240
SQUARE = 32
STEP = 8
RTP_CLOCK = Fraction(1, 90_000)


def picture(index: int, width: int = WIDTH, height: int = HEIGHT) -> npt.NDArray[np.uint8]:
    """RGB picture of frame ``index``: the square's left edge is at (index * STEP) mod span."""
    img = np.full((height, width, 3), 64, np.uint8)
    x = (index * STEP) % (width - SQUARE)
    y = (height - SQUARE) // 2
    img[y : y + SQUARE, x : x + SQUARE] = 255
    return img


def encode(
    frames: int,
    *,
    fps: int = 10,
    gop: int = 20,
    camera: str = "cam1",
    time_base: Fraction = RTP_CLOCK,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> list[EncodedPacket]:
    """``frames`` pictures at ``fps`` as Annex-B packets in decode order (no B-frames)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1",
    }
    ticks = Fraction(1, fps) / time_base
    out: list[EncodedPacket] = []

    def take(packets: list[av.Packet]) -> None:
        for p in packets:
            assert p.pts is not None
            pts = int(p.pts * ticks)
            out.append(EncodedPacket(camera, bytes(p), pts, time_base, bool(p.is_keyframe)))

    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(picture(i, width, height), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        take(ctx.encode(frame))
    take(ctx.encode(None))
    return out
