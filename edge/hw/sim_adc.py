"""A simulated MCP3008 on the SPI boundary, as the chip answers on its pins.

It is attached to gpiozero's mock SPI clock/select pins, so gpiozero's own MCP3008 class talks
to it bit by bit exactly as it would to the chip: the production code path is unchanged down to
the SPI bus. The decoding follows the MCP3004/3008 datasheet (section 5, "Serial
communication"): leading zeros are ignored, the first 1 clocked in with CS low is the start
bit, then SGL/DIFF and D2 D1 D0; one more clock completes the sample, a null bit follows, then
10 result bits MSB first and, if the master keeps clocking, the same result LSB first (B1..B9)
and zeros.
"""

from __future__ import annotations

from collections import deque
from threading import RLock
from time import monotonic
from typing import Any

from gpiozero import InputDevice, OutputDevice
from gpiozero.mixins import SharedMixin
from gpiozero.pins.mock import (
    MockPin,
    MockSPIClockPin,
    MockSPIDevice,
    MockSPISelectPin,
    PinState,
)
from gpiozero.pins.spi import SPISoftware, SPISoftwareBus

CHANNELS = 8
BITS = 10
_FULL_SCALE = 1 << BITS
STATES_KEPT = 64  # last changes a simulated pin remembers (gpiozero keeps them all)


class BoundedStates(MockPin):
    """A mock pin that remembers only its last :data:`STATES_KEPT` changes.

    gpiozero's MockPin appends every change to ``states`` so a unit test can assert on the
    sequence, and never forgets one. Each ADC read here clocks the bit-banged SPI pins about
    a hundred times, so the demo site's three polled loops grew edge-alarm by ~50 MB a
    minute. A bounded deque keeps the last changes (what a test looks at) and nothing more.
    """

    def clear_states(self) -> None:
        self._last_change = monotonic()
        self.states: deque[PinState] = deque([PinState(0.0, self._state)], maxlen=STATES_KEPT)


class SimSPIClockPin(BoundedStates, MockSPIClockPin):
    """The SPI clock pin of the simulated chip, with bounded history."""


class SimSPISelectPin(BoundedStates, MockSPISelectPin):
    """The SPI chip-select pin of the simulated chip, with bounded history."""


# MockSPIDevice asks the factory for gpiozero's own SPI pin classes; the factory hands out these.
SPI_PIN_CLASSES: dict[type, type] = {
    MockSPIClockPin: SimSPIClockPin,
    MockSPISelectPin: SimSPISelectPin,
}


class SimMCP3008(MockSPIDevice):
    """The chip's digital side; ``set_volts`` is its analog side (the simulated loops)."""

    def __init__(
        self,
        clock_pin: Any,
        mosi_pin: Any,
        miso_pin: Any,
        select_pin: Any,
        *,
        vref: float,
        pin_factory: Any,
    ) -> None:
        if vref <= 0:
            raise ValueError(f"vref must be positive, got {vref}")
        self.vref = vref
        self._volts = [0.0] * CHANNELS
        self._start: int | None = None
        super().__init__(clock_pin, mosi_pin, miso_pin, select_pin, pin_factory=pin_factory)

    def set_volts(self, channel: int, volts: float) -> None:
        """Voltage on CH<channel>; above vref the code saturates, as on the chip."""
        self._check_channel(channel)
        if not volts >= 0:
            raise ValueError(f"channel {channel}: voltage must be >= 0, got {volts}")
        self._volts[channel] = float(volts)

    def volts(self, channel: int) -> float:
        self._check_channel(channel)
        return self._volts[channel]

    def code(self, single: bool, channel: int) -> int:
        """Conversion result: floor(1024 * Vin / Vref), clamped to 0..1023 (datasheet eq. 4-2).

        Pseudo-differential inputs pair CH0/CH1, CH2/CH3...; D0 picks which is IN+ and a
        negative difference reads 0.
        """
        self._check_channel(channel)
        vin = self._volts[channel] - (0.0 if single else self._volts[channel ^ 1])
        return max(0, min(_FULL_SCALE - 1, int(_FULL_SCALE * vin / self.vref)))

    def on_start(self) -> None:
        """CS fell: a new conversion begins and waits for its start bit."""
        super().on_start()
        self._start = None

    def on_bit(self) -> None:
        """Called after each rising clock edge with the bit just read from DIN."""
        if self._start is None:
            if self.rx_buf[-1]:
                self._start = self.rx_bit
            return
        if self.rx_bit != self._start + 4:
            return
        single, d2, d1, d0 = (int(bool(b)) for b in self.rx_buf[-4:])
        result = self.code(bool(single), d2 << 2 | d1 << 1 | d0)
        msb_first = [(result >> i) & 1 for i in range(BITS - 1, -1, -1)]
        # Sample clock (DOUT still high-Z, read as 0), null bit, MSB-first result, then the
        # LSB-first repeat that shares B0 with the MSB-first word.
        self.tx_buf = [0, 0, *msb_first, *reversed(msb_first[:-1])]

    @staticmethod
    def _check_channel(channel: int) -> None:
        if not 0 <= channel < CHANNELS:
            raise ValueError(f"MCP3008 channel must be 0..{CHANNELS - 1}, got {channel}")


# gpiozero 2.0's software SPI, as MockFactory uses it, has two flaws that matter once several
# mock factories live in one process (every test builds its own): SPISoftwareBus drops its
# pin_factory and falls back to the global default factory (none exists off a Pi, so it raises
# BadPinFactory), and shared buses/interfaces are keyed by pin names only, so a second factory
# would silently reuse the first one's bus and read the first one's chip. These subclasses
# repeat gpiozero's constructors with the factory passed on and part of the key.


class SimSPIBus(SPISoftwareBus):
    """Bit-banged SPI bus bound to its own factory."""

    def __init__(self, clock_pin: Any, mosi_pin: Any, miso_pin: Any, *, pin_factory: Any) -> None:
        self.lock = None
        self.clock = None
        self.mosi = None
        self.miso = None
        super(SPISoftwareBus, self).__init__(pin_factory=pin_factory)
        self.lock = RLock()
        try:
            self.clock = OutputDevice(clock_pin, active_high=True, pin_factory=pin_factory)
            self.mosi = OutputDevice(mosi_pin, pin_factory=pin_factory)
            self.miso = InputDevice(miso_pin, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise

    @classmethod
    def _shared_key(
        cls, clock_pin: Any, mosi_pin: Any, miso_pin: Any, *, pin_factory: Any = None
    ) -> tuple[Any, ...]:
        return (id(pin_factory), clock_pin, mosi_pin, miso_pin)


class SimSPI(SPISoftware):
    """Software SPI interface whose bus belongs to the same factory."""

    def __init__(
        self, clock_pin: Any, mosi_pin: Any, miso_pin: Any, select_pin: Any, *, pin_factory: Any
    ) -> None:
        self._bus = None
        self._select = None
        super(SPISoftware, self).__init__(pin_factory=pin_factory)
        try:
            self._clock_phase = False
            self._lsb_first = False
            self._bits_per_word = 8
            self._bus = SimSPIBus(clock_pin, mosi_pin, miso_pin, pin_factory=pin_factory)
            self._select = OutputDevice(select_pin, active_high=False, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise


class SimSPIShared(SharedMixin, SimSPI):
    """What gpiozero's ADC classes ask for (``shared=True``): one interface per chip select."""

    @classmethod
    def _shared_key(
        cls, clock_pin: Any, mosi_pin: Any, miso_pin: Any, select_pin: Any, pin_factory: Any
    ) -> tuple[Any, ...]:
        return (id(pin_factory), clock_pin, select_pin)
