"""Alarm inputs: dry contacts on GPIO and supervised loops on an MCP3008, debounced by us.

gpiozero's own ``bounce_time`` is a leading-edge lockout that MockFactory ignores, and it
would accept the first edge of a bouncing contact; an alarm panel wants the opposite: a new
level counts only once it has *held* for ``debounce_ms`` (trailing, integrating debounce), so a
glitch shorter than that produces nothing. Every decision is made on the asyncio loop thread:
gpiozero may call us from its own thread (lgpio alerts) or synchronously (MockFactory), and
both hop onto the loop with ``call_soon_threadsafe``.

Only *accepted* state changes reach ``on_change``; the latest measured volts/ohms of every
loop are kept for diagnostics (``snapshot``) whether or not the state changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from gpiozero import MCP3008, DigitalInputDevice

from edge.config.models import AdcInput, GpioInput
from edge.config.site import SiteConfig
from edge.errors import HardwareError
from edge.loops import LoopModel, LoopState, ohms_from_volts
from edge.pinout import spi_pins

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Reading:
    """One zone's state. In ``on_change``, ``mono_ns`` is when the new state began (the edge
    or first sample that showed it); in ``snapshot`` it is when the values were last read.
    ``ohms`` is ``math.inf`` for a cut loop; volts/ohms are None for GPIO zones and for an
    ADC read that failed."""

    zone_id: str
    state: LoopState
    mono_ns: int
    volts: float | None = None
    ohms: float | None = None


def contact_state(contact: str, closed: bool) -> LoopState:
    """A normally-closed contact at rest is closed; a normally-open one is open."""
    return LoopState.NORMAL if closed == (contact == "nc") else LoopState.ALARM


def samples_needed(debounce_ms: int, sample_ms: int) -> int:
    """Consecutive samples that span at least ``debounce_ms`` at the nominal period."""
    return 1 + math.ceil(debounce_ms / sample_ms)


class SampleDebounce:
    """A new state is accepted once seen in ``needed`` consecutive samples."""

    def __init__(self, state: LoopState, needed: int) -> None:
        self.state = state
        self._needed = max(1, needed)
        self._candidate: LoopState | None = None
        self._count = 0
        self._since_ns = 0

    def reset(self, state: LoopState) -> None:
        """Take ``state`` as accepted at once (the starting state needs no debounce)."""
        self.state, self._candidate = state, None

    def feed(self, seen: LoopState, now_ns: int) -> int | None:
        """When the newly accepted state began, or None while the accepted state stands."""
        if seen is self.state:
            self._candidate = None
            return None
        if seen is not self._candidate:
            self._candidate, self._count, self._since_ns = seen, 0, now_ns
        self._count += 1
        if self._count < self._needed:
            return None
        self.state, self._candidate = seen, None
        return self._since_ns


@dataclasses.dataclass
class _GpioZone:
    id: str
    spec: GpioInput
    device: Any = None
    closed: bool = False
    state: LoopState = LoopState.NORMAL
    pending: asyncio.TimerHandle | None = None


@dataclasses.dataclass
class _AdcZone:
    id: str
    spec: AdcInput
    model: LoopModel
    debounce: SampleDebounce
    device: Any = None
    failing: bool = False


class Inputs:
    """Every zone input of the site, read through an injected gpiozero pin factory."""

    def __init__(
        self,
        cfg: SiteConfig,
        factory: Any,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[Reading], None],
    ) -> None:
        self._adc_cfg = cfg.hardware.adc
        self._factory = factory
        self._loop = loop
        self._on_change = on_change
        self._order = [z.id for z in cfg.zones]
        needed = {
            z.id: samples_needed(z.input.debounce_ms, self._adc_cfg.sample_ms) for z in cfg.zones
        }
        self._gpio = {
            z.id: _GpioZone(z.id, z.input) for z in cfg.zones if isinstance(z.input, GpioInput)
        }
        self._adc = {
            z.id: _AdcZone(
                z.id, z.input, z.input.model(), SampleDebounce(LoopState.FAULT, needed[z.id])
            )
            for z in cfg.zones
            if isinstance(z.input, AdcInput)
        }
        self._latest: dict[str, Reading] = {}

    def start(self) -> None:
        """Open every device, then report each zone's starting state (one Reading per zone).

        Nothing is reported unless every input opened; on failure the ones already opened
        are closed again and HardwareError names the zone and pin.
        """
        try:
            for gz in self._gpio.values():
                self._open_gpio(gz)
            for az in self._adc.values():
                self._open_adc(az)
        except BaseException:
            self.close()
            raise
        for zid in self._order:
            self._on_change(self._latest[zid])

    def _open_gpio(self, z: _GpioZone) -> None:
        try:
            device = DigitalInputDevice(
                f"GPIO{z.spec.pin}",
                pull_up=z.spec.pull == "up",
                bounce_time=None,
                pin_factory=self._factory,
            )
        except Exception as exc:
            raise HardwareError(
                f"zone {z.id!r}: cannot open GPIO {z.spec.pin}: {exc}; check that no other "
                "program or overlay uses that pin (pinctrl get) and the zone's pin number"
            ) from exc
        z.device = device
        # Callbacks first, level second: an edge in between is queued, not lost.
        device.when_activated = self._pin_callback(z.id, True)
        device.when_deactivated = self._pin_callback(z.id, False)
        z.closed = bool(device.is_active)  # active = contact closed, for either pull
        z.state = contact_state(z.spec.contact, z.closed)
        self._latest[z.id] = Reading(z.id, z.state, time.monotonic_ns())

    def _open_adc(self, z: _AdcZone) -> None:
        pins = spi_pins(self._adc_cfg)
        try:
            z.device = MCP3008(
                channel=z.spec.channel,
                max_voltage=self._adc_cfg.vref,
                pin_factory=self._factory,
                **pins.as_kwargs(),
            )
        except Exception as exc:
            raise HardwareError(
                f"zone {z.id!r}: cannot open MCP3008 channel {z.spec.channel} on SPI "
                f"{self._adc_cfg.spi_port}.{self._adc_cfg.spi_device} (GPIO {pins.clock} clock, "
                f"{pins.mosi} MOSI, {pins.miso} MISO, {pins.select} CS): {exc}; check that SPI is "
                "enabled (dtparam=spi=on in config.txt), that nothing else uses those pins "
                "and the hardware.adc settings"
            ) from exc
        volts, ohms = self._measure(z)
        state = LoopState.FAULT if ohms is None else z.model.classify(ohms)
        z.debounce.reset(state)
        self._latest[z.id] = Reading(z.id, state, time.monotonic_ns(), volts, ohms)

    def snapshot(self) -> dict[str, Reading]:
        """Latest reading of every zone (ADC volts/ohms as of the last sample)."""
        return dict(self._latest)

    def close(self) -> None:
        """Release every pin; idempotent, and safe after a partial start."""
        for gz in self._gpio.values():
            if gz.pending is not None:
                gz.pending.cancel()
                gz.pending = None
        zones: list[_GpioZone | _AdcZone] = [*self._gpio.values(), *self._adc.values()]
        for z in zones:
            device, z.device = z.device, None
            if device is None:
                continue
            try:
                device.close()
            except Exception:
                log.exception("zone %s: closing its input failed", z.id)

    # -- GPIO: edges hop onto the loop, then the trailing debounce -----------------------

    def _pin_callback(self, zid: str, closed: bool) -> Callable[[], None]:
        def on_edge() -> None:
            stamp = time.monotonic_ns()
            try:
                self._loop.call_soon_threadsafe(self._edge, zid, closed, stamp)
            except RuntimeError:  # the loop is closed: we are shutting down
                log.debug("zone %s: edge after the event loop closed", zid)

        return on_edge

    def _edge(self, zid: str, closed: bool, stamp: int) -> None:
        """A raw level change; each edge restarts the hold timer."""
        z = self._gpio[zid]
        if z.device is None:
            return
        if z.pending is not None:
            z.pending.cancel()
            z.pending = None
        if closed == z.closed:
            return  # back to the accepted level before the hold time: a glitch
        if z.spec.debounce_ms == 0:
            self._accept(z, closed, stamp)
            return
        z.pending = self._loop.call_later(z.spec.debounce_ms / 1000, self._settle, z, closed, stamp)

    def _settle(self, z: _GpioZone, closed: bool, stamp: int) -> None:
        """The hold time elapsed; re-read the pin so a lost edge cannot freeze the state."""
        z.pending = None
        if z.device is None:
            return
        try:
            actual = bool(z.device.is_active)
        except Exception as exc:
            log.warning("zone %s: cannot re-read GPIO %s: %s", z.id, z.spec.pin, exc)
            actual = closed
        if actual != closed:
            self._edge(z.id, actual, time.monotonic_ns())
            return
        self._accept(z, closed, stamp)

    def _accept(self, z: _GpioZone, closed: bool, stamp: int) -> None:
        z.closed = closed
        state = contact_state(z.spec.contact, closed)
        if state is z.state:
            return
        z.state = state
        reading = Reading(z.id, state, stamp)
        self._latest[z.id] = reading
        log.debug("zone %s: %s", z.id, state.value)
        self._on_change(reading)

    # -- ADC: polled, classified with hysteresis, debounced in samples ---------------------

    async def run_adc(self, beat: Callable[[], None] | None = None) -> None:
        """Poll the ADC loops every ``hardware.adc.sample_ms`` and call ``beat`` each round.

        Runs (and beats) even without ADC zones, so the service supervises every site the
        same way. A late round is not made up with a burst: the schedule restarts from now.
        """
        period = self._adc_cfg.sample_ms / 1000
        deadline = self._loop.time()
        while True:
            self.poll_once()
            if beat is not None:
                beat()
            deadline += period
            delay = deadline - self._loop.time()
            if delay < 0:
                deadline, delay = self._loop.time(), 0.0
            await asyncio.sleep(delay)

    def poll_once(self) -> None:
        """Sample every open ADC zone once (one round of ``run_adc``)."""
        for z in self._adc.values():
            if z.device is None:
                continue
            volts, ohms = self._measure(z)
            seen = LoopState.FAULT if ohms is None else z.model.classify(ohms, z.debounce.state)
            now = time.monotonic_ns()
            began = z.debounce.feed(seen, now)
            reading = Reading(z.id, z.debounce.state, now, volts, ohms)
            self._latest[z.id] = reading
            if began is not None:
                log.debug("zone %s: %s at %s ohms", z.id, reading.state.value, ohms)
                self._on_change(dataclasses.replace(reading, mono_ns=began))

    def _measure(self, z: _AdcZone) -> tuple[float | None, float | None]:
        """(volts, ohms); (None, None) when the ADC cannot be read, which counts as FAULT."""
        try:
            volts = float(z.device.voltage)
        except Exception as exc:
            if not z.failing:
                log.error("zone %s: cannot read MCP3008 channel %s: %s", z.id, z.spec.channel, exc)
            z.failing = True
            return None, None
        if z.failing:
            log.info("zone %s: MCP3008 channel %s reads again", z.id, z.spec.channel)
            z.failing = False
        return volts, ohms_from_volts(volts, self._adc_cfg.vref, self._adc_cfg.pullup_ohms)
