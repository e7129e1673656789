"""Simulation backend of the hardware seam: pins with wired contacts, an MCP3008, the loops.

Shipped in the package (like ``gpiozero.pins.mock``) because the demo, hw-sim and the tests all
use it. Only the boundary is simulated: our input code creates ordinary gpiozero devices on a
:class:`SimFactory` and reads them exactly as it reads a Pi. :class:`SimHardware` plays the
installer's screwdriver: it opens, shorts or trips a zone by changing what is wired to a pin or
an ADC channel. It runs on the thread that owns the inputs (the asyncio loop thread), so a
change is seen by gpiozero synchronously, as MockFactory does.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from gpiozero.exc import PinFixedPull, PinInvalidPull
from gpiozero.pins.mock import MockFactory, MockPin, MockSPIClockPin, MockSPISelectPin

from edge.config.models import AdcInput, GpioInput
from edge.config.site import SiteConfig
from edge.errors import CommandError, HardwareError
from edge.hw.sim_adc import SPI_PIN_CLASSES, BoundedStates, SimMCP3008, SimSPI, SimSPIShared
from edge.loops import volts_from_ohms
from edge.pinout import SpiPins, spi_pins

log = logging.getLogger(__name__)

CLOSED_BELOW_OHMS = 100.0
_WORDS = ("trip", "restore", "open", "short")
_ACCEPTED = "trip, restore, open, short, or a loop resistance in ohms (e.g. 4700, 9400 or 4.7k)"


class SimPin(BoundedStates, MockPin):
    """A mock pin with something wired to it: a closed contact overrides the weak pull.

    MockPin models only the pull resistor, so configuring the pull would overwrite a
    simulated contact; here the contact wins, as on the board. Its history of changes is
    bounded (BoundedStates): a simulator runs for days.
    """

    _external: bool | None = None

    def connect(self, level: bool | None) -> None:
        """Drive the pin to ``level`` through a closed contact; None = nothing connected."""
        self._external = level
        self._settle()

    def _set_pull(self, value: str) -> None:
        # Same checks as MockPin, without its transient drive to the pull level.
        if self.function != "input":
            raise PinFixedPull(f"cannot set pull on non-input pin {self!r}")
        if self.info.pull and value != self.info.pull:
            raise PinFixedPull(f"{self!r} has a fixed pull resistor")
        if value not in ("floating", "up", "down"):
            raise PinInvalidPull("pull must be floating, up, or down")
        self._pull = value
        self._settle()

    def _settle(self) -> None:
        if self.function != "input":
            return
        level = self._external
        if level is None:
            level = {"up": True, "down": False}.get(self._pull, self.state)
        if level:
            self.drive_high()
        else:
            self.drive_low()


class SimFactory(MockFactory):
    """A MockFactory whose every SPI interface has a simulated MCP3008 behind it.

    gpiozero 2 builds SPI mocks from pins, so the chip must exist before the bus pins do;
    we attach it when an SPI interface is asked for (or when the simulator asks first).
    """

    def __init__(self, vref: float = 3.3, revision: str | None = None) -> None:
        super().__init__(revision=revision, pin_class=SimPin)
        self.vref = vref
        self._adcs: dict[str, SimMCP3008] = {}

    def mcp3008(self, pins: SpiPins) -> SimMCP3008:
        """The simulated chip on these SPI pins, attached on first use."""
        names, _ = self._extract_spi_args(**pins.as_kwargs())
        return self._attach(names)

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        """gpiozero's pin, except that its SPI pin classes become our bounded ones."""
        return super().pin(name, pin_class=SPI_PIN_CLASSES.get(pin_class, pin_class), **kwargs)

    def spi(self, **spi_args: Any) -> Any:
        names, _ = self._extract_spi_args(**spi_args)
        self._attach(names)
        return super().spi(**spi_args)

    def _get_spi_class(self, shared: bool, hardware: bool) -> type:
        return SimSPIShared if shared else SimSPI

    def _attach(self, names: dict[str, str]) -> SimMCP3008:
        select = names["select_pin"]
        chip = self._adcs.get(select)
        if chip is not None:
            return chip
        self._check_unused(names["clock_pin"], MockSPIClockPin, "SPI clock")
        self._check_unused(select, MockSPISelectPin, "SPI chip select")
        chip = SimMCP3008(
            names["clock_pin"],
            names["mosi_pin"],
            names["miso_pin"],
            select,
            vref=self.vref,
            pin_factory=self,
        )
        self._adcs[select] = chip
        return chip

    def _check_unused(self, name: str, kind: type, role: str) -> None:
        """gpiozero's SPI mock needs its own pin classes; a plain pin there would stay mute."""
        for info, pin in self.pins.items():
            if name in info.names and not isinstance(pin, kind):
                raise HardwareError(
                    f"{name} is already used as a plain pin; the simulated ADC needs it as "
                    f"{role}: give that input another pin"
                )


class SimHardware:
    """What is wired to each zone's input, changed by commands from hw-sim or the tests."""

    def __init__(self, cfg: SiteConfig, factory: SimFactory) -> None:
        if not isinstance(factory, SimFactory):
            raise HardwareError(
                f"the simulator needs the sim pin factory, got {type(factory).__name__}: "
                'set hardware.backend = "sim"'
            )
        self._factory = factory
        self._adc_cfg = cfg.hardware.adc
        self._zones = {z.id: z.input for z in cfg.zones}
        self._ohms: dict[str, float] = {}
        self._pins: dict[str, SimPin] = {}
        self._chip: SimMCP3008 | None = None
        for zid, spec in self._zones.items():
            if isinstance(spec, GpioInput):
                self._pins[zid] = self._pin(zid, spec)
            elif self._chip is None:
                self._chip = factory.mcp3008(spi_pins(self._adc_cfg))
        for zid in self._zones:
            self.apply(zid, "restore")

    def _pin(self, zid: str, spec: GpioInput) -> SimPin:
        pin = self._factory.pin(f"GPIO{spec.pin}")
        if not isinstance(pin, SimPin):
            raise HardwareError(
                f"zone {zid!r}: GPIO {spec.pin} is already used by the simulated ADC: "
                "give the zone another pin"
            )
        return pin

    @property
    def zone_ids(self) -> list[str]:
        return list(self._zones)

    def loop_ohms(self, zone_id: str) -> float:
        """Resistance now wired on the zone (inf when cut, 0 when shorted)."""
        self._spec(zone_id)
        return self._ohms[zone_id]

    def apply(self, zone_id: str, command: str) -> str:
        """Rewire one zone; returns a line saying what the input now sees."""
        spec = self._spec(zone_id)
        ohms = _target_ohms(spec, _parse(zone_id, command))
        self._ohms[zone_id] = ohms
        if isinstance(spec, GpioInput):
            return self._set_contact(zone_id, spec, ohms)
        return self._set_loop(zone_id, spec, ohms)

    def _spec(self, zone_id: str) -> GpioInput | AdcInput:
        try:
            return self._zones[zone_id]
        except KeyError:
            known = ", ".join(self._zones) or "(none configured)"
            raise CommandError(f"unknown zone {zone_id!r}: known zones are {known}") from None

    def _set_contact(self, zone_id: str, spec: GpioInput, ohms: float) -> str:
        closed = ohms < CLOSED_BELOW_OHMS
        # A contact closes to the rail opposite the pull: GND with a pull-up, 3V3 with a pull-down.
        self._pins[zone_id].connect((spec.pull == "down") if closed else None)
        level = "high" if self._pins[zone_id].state else "low"
        what = "closed" if closed else "open"
        log.debug("sim zone %s: contact %s", zone_id, what)
        return f"zone {zone_id}: contact {what} (GPIO {spec.pin} {level})"

    def _set_loop(self, zone_id: str, spec: AdcInput, ohms: float) -> str:
        assert self._chip is not None  # built in __init__ for every ADC zone
        volts = volts_from_ohms(ohms, self._chip.vref, self._adc_cfg.pullup_ohms)
        self._chip.set_volts(spec.channel, volts)
        loop = "open" if math.isinf(ohms) else f"{ohms:.0f} ohms"
        log.debug("sim zone %s: loop %s", zone_id, loop)
        return f"zone {zone_id}: loop {loop} ({volts:.2f} V)"


def _parse(zone_id: str, command: str) -> str | float:
    text = command.strip().lower()
    if text in _WORDS:
        return text
    scale = 1000.0 if text.endswith("k") else 1.0
    try:
        ohms = float(text.removesuffix("k")) * scale
    except ValueError:
        raise CommandError(
            f"zone {zone_id}: unknown command {command!r}: use {_ACCEPTED}"
        ) from None
    if not math.isfinite(ohms) or ohms < 0:
        raise CommandError(
            f"zone {zone_id}: resistance {command!r} must be a finite number >= 0 "
            "(use 'open' for a cut loop)"
        )
    return ohms


def _target_ohms(spec: GpioInput | AdcInput, command: str | float) -> float:
    """Resistance a command puts on the zone; for a contact, 0 = closed and inf = open."""
    if isinstance(command, float):
        return command
    if command == "open":
        return math.inf
    if command == "short":
        return 0.0
    if isinstance(spec, GpioInput):
        closed_at_rest = spec.contact == "nc"
        closed = closed_at_rest if command == "restore" else not closed_at_rest
        return 0.0 if closed else math.inf
    if command == "restore":
        return spec.eol_ohms
    if spec.wiring == "deol":
        return spec.eol_ohms + spec.alarm_ohms
    return math.inf if spec.contact == "nc" else 0.0
