"""Choice of the gpiozero pin factory: the one seam between our code and the hardware.

Hardware is injected, never probed at import: importing this module touches no GPIO chip and
imports no real pin library. `make_pin_factory` builds the factory once, at service start, and
every device is created with ``pin_factory=`` so tests, the demo and hw-sim swap the real pins
for the simulated ones without a global switch.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from edge.config.models import Hardware
from edge.errors import HardwareError

log = logging.getLogger(__name__)

_NO_GPIO_HINT = (
    "is this a Raspberry Pi? install lgpio (apt install python3-lgpio) on a Pi, or set "
    'hardware.backend = "sim" to run without hardware'
)


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
