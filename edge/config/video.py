"""Cameras, motion pre-analysis, privacy masks and clip retention (`[video]` in site.toml).

Polygons are lists of [x, y] points in the unit square (0..1 of the image width and height),
so the same zone fits every resolution of a camera: main stream, sub-stream, analysis frame.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config.models import ID_PATTERN, Strict

Point = tuple[float, float]
RETENTION_MAX_DAYS = 31  # Code de la sécurité intérieure L252-5: at most one month


def _check_polygon(points: list[Point]) -> list[Point]:
    if len(points) < 3:
        raise ValueError("a polygon needs at least 3 points [x, y]")
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(
                f"point [{x}, {y}] is outside the image: use fractions of the width and "
                "height between 0 and 1"
            )
    return points


class MotionZone(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Zone identifier (lowercase).")
    name: str = Field("", max_length=80, description="Name an operator reads.")
    polygon: list[Point] = Field(description="Area watched, as [x, y] fractions of the image.")
    action: Literal["alarm", "tag"] = Field(
        "tag",
        description="alarm: a virtual alarm input (an event and a clip); tag: only "
        "marks clips and the journal.",
    )
    sensitivity: int = Field(
        50, ge=1, le=100, description="Higher detects smaller or fainter changes."
    )
    min_cells: int = Field(
        2, ge=1, le=1000, description="Changed grid cells needed inside the zone."
    )
    persistence_frames: int = Field(
        3, ge=1, le=100, description="Consecutive frames with motion before it counts."
    )

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[Point]) -> list[Point]:
        return _check_polygon(v)


class Motion(Strict):
    enabled: bool = Field(True, description="Run the motion pre-analysis on this camera.")
    analysis_rows: int = Field(
        176, ge=90, le=360, description="Target height of the analysis frame (integer stride)."
    )
    grid: tuple[int, int] = Field(
        (16, 12), description="Cells across and down the analysis frame (columns, rows)."
    )
    learning_rate: float = Field(
        0.02, gt=0.0, le=0.5, description="Running-average background update per frame."
    )
    pixel_threshold: int = Field(
        25, ge=3, le=128, description="Luma difference (0-255) that makes a pixel changed."
    )
    lighting_fraction: float = Field(
        0.6,
        ge=0.2,
        le=1.0,
        description="Global changes of brightness, contrast and gamma (lights, the IR "
        "day/night switch) are corrected, never held off; a change over this fraction of "
        "the frame that they do not explain (the view itself changed) relearns the "
        "background fast and holds new motion off.",
    )
    lighting_holdoff_s: float = Field(
        2.0,
        ge=0.0,
        le=30.0,
        description="How long new motion is held off after such a relearn; motion events "
        "under way stay open through it.",
    )
    zones: list[MotionZone] = Field(
        default_factory=list,
        description="Detection zones; none means the whole frame as one tag zone.",
    )
    ignore: list[list[Point]] = Field(
        default_factory=list, description="Polygons never analysed (trees, roads, screens)."
    )

    @field_validator("ignore")
    @classmethod
    def _ignore(cls, v: list[list[Point]]) -> list[list[Point]]:
        return [_check_polygon(p) for p in v]

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (2 <= v[0] <= 64 and 2 <= v[1] <= 64):
            raise ValueError("grid cells must be between 2 and 64 in each direction")
        return v


class Health(Strict):
    frozen_s: float = Field(10, ge=2, le=600, description="Identical frames this long: frozen.")
    dark_level: int = Field(12, ge=0, le=64, description="Mean luma below this: covered / black.")
    defocus_ratio: float = Field(
        0.35,
        gt=0.0,
        lt=1.0,
        description="High-frequency energy below this fraction of the reference: defocused.",
    )
    scene_change: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Similarity to the reference below this: turned away or displaced.",
    )
    signal_loss_s: float = Field(5, ge=1, le=120, description="No frame this long: video loss.")


class Onvif(Strict):
    url: str = Field(
        max_length=255,
        description="ONVIF PTZ service URL of the camera, e.g. http://192.168.1.20/onvif/ptz_service.",
    )
    username: str = Field("", max_length=64, description="ONVIF user (WS-Security digest).")
    password_file: str | None = Field(
        None, max_length=255, description="File holding the ONVIF password (not in site.toml)."
    )
    profile_token: str = Field(
        "Profile_1", max_length=64, description="Media profile whose PTZ presets are used."
    )
    presets: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Preset tokens an operator may go to; empty: any preset of the camera.",
    )
    timeout_s: float = Field(3.0, ge=0.5, le=15.0, description="Per request to the camera.")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("the ONVIF URL starts with http:// or https://")
        return v


class Camera(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Camera identifier (lowercase).")
    name: str = Field("", max_length=80, description="Name an operator reads.")
    source: Literal["picamera2", "rtsp", "file", "v4l2", "synthetic"] = Field(
        description="Where the video comes from."
    )
    url: str = Field(
        "",
        max_length=500,
        description="rtsp://… for IP cameras, a path for file, /dev/videoN for v4l2, a scene "
        "name for synthetic (e.g. walker, lights, dusk, rain, covered, defocus, turned, lost).",
    )
    substream_url: str = Field(
        "", max_length=500, description="Lower-resolution RTSP stream used for analysis."
    )
    width: int = Field(1280, ge=160, le=3840, description="Main stream width (when we encode).")
    height: int = Field(720, ge=120, le=2160, description="Main stream height.")
    fps: int = Field(15, ge=1, le=60, description="Frames per second (when we encode).")
    gop_s: float = Field(2.0, ge=0.25, le=10.0, description="Keyframe interval (when we encode).")
    privacy_masks: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons burned black before encoding (not possible on passed-through "
        "RTSP: mask in the camera).",
    )
    motion: Motion = Field(default_factory=Motion, description="Motion pre-analysis.")
    health: Health = Field(default_factory=Health, description="Camera health checks.")
    alarm_zones: list[str] = Field(
        default_factory=list,
        description="Alarm zones whose events make this camera keep a clip (empty: all).",
    )
    onvif: Onvif | None = Field(None, description="ONVIF PTZ control (presets) of this camera.")

    @field_validator("privacy_masks")
    @classmethod
    def _masks(cls, v: list[list[Point]]) -> list[list[Point]]:
        return [_check_polygon(p) for p in v]

    @model_validator(mode="after")
    def _url(self) -> Camera:
        if self.source in ("rtsp", "file", "v4l2", "synthetic") and not self.url:
            raise ValueError(f"camera {self.id!r}: source {self.source} needs a url")
        if self.source == "rtsp" and not self.url.startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"camera {self.id!r}: an RTSP url starts with rtsp://")
        return self


class Clips(Strict):
    pre_s: float = Field(10, ge=0, le=60, description="Video kept before the alarm (seconds).")
    post_s: float = Field(20, ge=1, le=300, description="Video kept after the last alarm.")
    ring_max_mb: int = Field(
        64, ge=4, le=1024, description="Bound of each camera's pre-alarm buffer in memory."
    )
    retention_days: int = Field(
        30,
        ge=1,
        le=RETENTION_MAX_DAYS,
        description="Clips are deleted after this (law: 31 days at most).",
    )
    quota_mb: int = Field(
        2048, ge=64, le=1_000_000, description="Disk budget of clips; oldest go first."
    )


class Video(Strict):
    cameras: list[Camera] = Field(default_factory=list, max_length=16, description="Cameras.")
    clips: Clips = Field(default_factory=Clips, description="Pre/post-alarm clips.")
