"""The whole site configuration and the rules that span several sections."""

from __future__ import annotations

from collections import Counter

from pydantic import Field, model_validator

from edge.config.central import CentralConfig
from edge.config.dc09 import Dc09Config, site_problems
from edge.config.live import LiveConfig, WebConfig, live_problems
from edge.config.models import (
    Bus,
    Hardware,
    Journal,
    Output,
    Partition,
    Paths,
    SirenRule,
    SiteInfo,
    Strict,
    Zone,
)
from edge.config.remote import RemoteConfig
from edge.config.uplink import HeartbeatConfig, OutboxConfig
from edge.config.video import Video
from edge.pinout import spi_pins

# Cross-section problems travel in one ValueError; the loader splits them again.
CROSS_SEPARATOR = "\n"


class SiteConfig(Strict):
    site: SiteInfo = Field(description="Identity of the site.")
    paths: Paths = Field(default_factory=Paths, description="Where the box keeps its files.")
    bus: Bus = Field(default_factory=Bus, description="The box broker.")
    hardware: Hardware = Field(default_factory=Hardware, description="Pins and ADC.")
    journal: Journal = Field(default_factory=Journal, description="Event journal retention.")
    partitions: list[Partition] = Field(
        default_factory=lambda: [Partition(id="main")],
        description="Areas armed and disarmed together.",
    )
    zones: list[Zone] = Field(default_factory=list, max_length=64, description="Alarm inputs.")
    outputs: list[Output] = Field(default_factory=list, max_length=32, description="Relays.")
    siren: SirenRule | None = Field(None, description="Local siren rule.")
    video: Video = Field(default_factory=Video, description="Cameras and clips (edge-video).")
    central: CentralConfig | None = Field(
        None, description="Bridge of the box broker to the central station (MQTT over TLS)."
    )
    dc09: Dc09Config | None = Field(None, description="SIA DC-09 transmission to alarm receivers.")
    heartbeat: HeartbeatConfig = Field(
        default_factory=HeartbeatConfig, description="Cyclic test sent to the central station."
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig,
        description="Events kept and retried until the central station acknowledges them.",
    )
    remote: RemoteConfig = Field(
        default_factory=RemoteConfig,
        description="Signed remote commands from the central station.",
    )
    live: LiveConfig = Field(
        default_factory=LiveConfig,
        description="Live view: access policy, viewers, ICE servers, audio, tele-actions.",
    )
    web: WebConfig = Field(
        default_factory=WebConfig, description="The box's local web server (WHEP, LAN)."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> SiteConfig:
        problems = [
            *_duplicates("zones", [z.id for z in self.zones]),
            *_duplicates("partitions", [p.id for p in self.partitions]),
            *_duplicates("outputs", [o.id for o in self.outputs]),
            *_duplicates("video.cameras", [c.id for c in self.video.cameras]),
            *self._pins(),
            *self._channels(),
            *self._references(),
            *(site_problems(self.dc09, self) if self.dc09 else []),
            *live_problems(self.live, {o.id for o in self.outputs}),
        ]
        if problems:
            raise ValueError(CROSS_SEPARATOR.join(problems))
        return self

    def _pins(self) -> list[str]:
        users: dict[int, list[str]] = {}
        for z in self.zones:
            if z.input.kind == "gpio":
                users.setdefault(z.input.pin, []).append(f"zone {z.id!r}")
        for o in self.outputs:
            users.setdefault(o.pin, []).append(f"output {o.id!r}")
        # SPI pins used by the ADC when any loop is supervised.
        if any(z.input.kind == "adc" for z in self.zones):
            spi = spi_pins(self.hardware.adc)
            for pin in (spi.clock, spi.mosi, spi.miso, spi.select):
                users.setdefault(pin, []).append("the ADC (SPI)")
        return [
            f"GPIO {pin} is used by {' and '.join(who)}: give each its own pin"
            for pin, who in sorted(users.items())
            if len(who) > 1
        ]

    def _channels(self) -> list[str]:
        count = Counter(z.input.channel for z in self.zones if z.input.kind == "adc")
        return [
            f"ADC channel {ch} is used by {n} zones: give each loop its own channel"
            for ch, n in sorted(count.items())
            if n > 1
        ]

    def _references(self) -> list[str]:
        parts = {p.id for p in self.partitions}
        outs = {o.id for o in self.outputs}
        problems = [
            f"zone {z.id!r} is in partition {z.partition!r}, which is not defined: "
            f"add [[partitions]] id = {z.partition!r} or fix the zone"
            for z in self.zones
            if z.partition not in parts
        ]
        if self.siren and self.siren.output not in outs:
            problems.append(
                f"siren.output {self.siren.output!r} is not an output: "
                f"add [[outputs]] id = {self.siren.output!r} or fix the name"
            )
        for z in self.zones:
            if z.technical != "other" and z.type != "technical":
                problems.append(f"zone {z.id!r}: 'technical' only applies to type = \"technical\"")
        return problems

    def partition(self, pid: str) -> Partition:
        return next(p for p in self.partitions if p.id == pid)

    def zone(self, zid: str) -> Zone:
        return next(z for z in self.zones if z.id == zid)


def _duplicates(section: str, ids: list[str]) -> list[str]:
    return [
        f"{section}: id {i!r} appears {n} times; ids must be unique"
        for i, n in Counter(ids).items()
        if n > 1
    ]
