"""The Raspberry Pi header facts the configuration and the hardware seams both need.

Below both on purpose: `edge config check` refuses a GPIO pin that an enabled ADC's SPI bus
already uses, and edge-alarm wires the ADC to those same pins; one table serves both, and
neither imports the other.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

# BCM pin numbers of the SPI buses the MCP3008 can sit on. gpiozero 2.0 only knows SPI0 as
# hardware SPI; on SPI1 it bit-bangs the same pins (slower, but the ADC does not care).
_SPI_BUSES: dict[int, tuple[int, int, int, tuple[int, ...]]] = {
    0: (11, 10, 9, (8, 7)),
    1: (21, 20, 19, (18, 17, 16)),
}


class SpiAddress(Protocol):
    """Where an SPI device sits (the ``[hardware.adc]`` section has these two fields)."""

    @property
    def spi_port(self) -> int: ...

    @property
    def spi_device(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class SpiPins:
    """BCM numbers of the four SPI lines of one ADC."""

    clock: int
    mosi: int
    miso: int
    select: int

    def as_kwargs(self) -> dict[str, str]:
        """Arguments of a gpiozero SPI device (pin names, so both schemes agree)."""
        return {
            "clock_pin": f"GPIO{self.clock}",
            "mosi_pin": f"GPIO{self.mosi}",
            "miso_pin": f"GPIO{self.miso}",
            "select_pin": f"GPIO{self.select}",
        }


def spi_pins(adc: SpiAddress) -> SpiPins:
    """Pins of the configured ADC; explicit pins let gpiozero pick hardware SPI where it can."""
    clock, mosi, miso, selects = _SPI_BUSES[adc.spi_port]
    return SpiPins(clock, mosi, miso, selects[adc.spi_device])
