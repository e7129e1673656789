"""Choice of the gpiozero pin factory: the one seam between our code and the hardware.

Hardware is injected, never probed at import: importing this module touches no GPIO chip and
imports no real pin library. `make_pin_factory` builds the factory once, at service start, and
every device is created with ``pin_factory=`` so tests, the demo and hw-sim swap the real pins
for the simulated ones without a global switch.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

from edge.config.models import Adc, Hardware
from edge.errors import HardwareError

log = logging.getLogger(__name__)

# BCM pin numbers of the SPI buses the MCP3008 can sit on. gpiozero 2.0 only knows SPI0 as
# hardware SPI; on SPI1 it bit-bangs the same pins (slower, but the ADC does not care).
_SPI_BUSES: dict[int, tuple[int, int, int, tuple[int, ...]]] = {
    0: (11, 10, 9, (8, 7)),
    1: (21, 20, 19, (18, 17, 16)),
}

_NO_GPIO_HINT = (
    "is this a Raspberry Pi? install lgpio (apt install python3-lgpio) on a Pi, or set "
    'hardware.backend = "sim" to run without hardware'
)


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


def spi_pins(adc: Adc) -> SpiPins:
    """Pins of the configured ADC; explicit pins let gpiozero pick hardware SPI where it can."""
    clock, mosi, miso, selects = _SPI_BUSES[adc.spi_port]
    return SpiPins(clock, mosi, miso, selects[adc.spi_device])


def make_pin_factory(hw: Hardware) -> Any:
    """The gpiozero factory for ``hardware.backend``; HardwareError says how to fix a failure."""
    if hw.backend == "sim":
        from edge.hw.sim import SimFactory

        return SimFactory(vref=hw.adc.vref)
    return _real_factory()


def _real_factory() -> Any:
    """gpiozero's default real factory (lgpio, then RPi.GPIO, pigpio, native), built now.

    gpiozero reports each failed candidate as a warning; we collect them so the error names
    every reason instead of the bare "Unable to load any default pin factory".
    """
    try:
        from gpiozero import Device
    except ImportError as exc:  # pragma: no cover - gpiozero is a dependency
        raise HardwareError(
            f"gpiozero is not installed: {exc}; reinstall the edge package"
        ) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            factory = Device._default_pin_factory()
        except Exception as exc:
            reasons = "; ".join(str(w.message) for w in caught) or str(exc)
            raise HardwareError(f"no GPIO chip found ({reasons}): {_NO_GPIO_HINT}") from exc
    for w in caught:
        log.warning("GPIO pin factory: %s", w.message)
    try:
        model = factory.board_info.model
    except Exception as exc:
        factory.close()
        raise HardwareError(f"cannot identify the board: {exc}: {_NO_GPIO_HINT}") from exc
    log.info("GPIO pin factory %s on a Raspberry Pi %s", type(factory).__name__, model)
    return factory
