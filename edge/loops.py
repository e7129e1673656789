"""Supervised end-of-line (EOL) loop physics: resistance bands and their classification.

A supervised loop is read as a voltage divider: a pull-up resistor from the ADC reference to
the ADC input, and the loop (contacts plus EOL resistors) from the input to ground. From the
voltage we compute the loop resistance, and from the resistance its state. Bands are derived
from the nominal resistor values with a tolerance; a reading that falls between bands is a
*loop fault* (a corroded joint, a wrong resistor, a partial short), never silently one of the
states around it. Hysteresis widens the band of the current state so a reading sitting on a
band edge does not chatter.

Pure functions only: no I/O, so the edges are testable exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from enum import Enum


class LoopState(str, Enum):
    NORMAL = "normal"
    ALARM = "alarm"
    TAMPER_SHORT = "tamper_short"
    TAMPER_CUT = "tamper_cut"
    FAULT = "fault"

    @property
    def is_tamper(self) -> bool:
        return self in (LoopState.TAMPER_SHORT, LoopState.TAMPER_CUT)


# A short is anything below this fraction of the lowest band; an open anything above this
# multiple of the highest band.
SHORT_FRACTION = 0.1
OPEN_MULTIPLE = 4.0


@dataclasses.dataclass(frozen=True)
class Band:
    """Resistances in [low, high] (ohms) mean ``state``."""

    state: LoopState
    low: float
    high: float

    def contains(self, ohms: float, widen: float = 0.0) -> bool:
        return self.low * (1 - widen) <= ohms <= self.high * (1 + widen)


@dataclasses.dataclass(frozen=True)
class LoopModel:
    """Bands of one supervised loop, derived from its wiring and resistor values.

    ``wiring`` is ``seol`` (one EOL resistor) or ``deol`` (EOL + alarm resistor).
    For SEOL the contact decides which extreme is the alarm: a normally-closed contact in
    series with the EOL resistor opens the loop on alarm (so a short is tamper); a
    normally-open contact across the EOL resistor shorts it (so a cut is tamper).
    """

    wiring: str
    contact: str
    eol_ohms: float
    alarm_ohms: float
    tolerance: float
    hysteresis: float

    @property
    def bands(self) -> list[Band]:
        """Bands in increasing resistance order."""
        tol = self.tolerance
        normal = Band(LoopState.NORMAL, self.eol_ohms * (1 - tol), self.eol_ohms * (1 + tol))
        inner = [normal]
        if self.wiring == "deol":
            total = self.eol_ohms + self.alarm_ohms
            inner.append(Band(LoopState.ALARM, total * (1 - tol), total * (1 + tol)))
        short_state, open_state = self._extremes()
        short = Band(short_state, 0.0, inner[0].low * SHORT_FRACTION)
        open_ = Band(open_state, inner[-1].high * OPEN_MULTIPLE, math.inf)
        return [short, *inner, open_]

    def _extremes(self) -> tuple[LoopState, LoopState]:
        if self.wiring == "deol":
            return LoopState.TAMPER_SHORT, LoopState.TAMPER_CUT
        if self.contact == "no":
            return LoopState.ALARM, LoopState.TAMPER_CUT
        return LoopState.TAMPER_SHORT, LoopState.ALARM

    def overlaps(self) -> list[tuple[Band, Band]]:
        """Adjacent bands that touch or overlap, including the hysteresis margin."""
        bands = self.bands
        bad = []
        for lower, upper in itertools.pairwise(bands):
            if lower.high * (1 + self.hysteresis) >= upper.low * (1 - self.hysteresis):
                bad.append((lower, upper))
        return bad

    def classify(self, ohms: float, current: LoopState | None = None) -> LoopState:
        """State for a resistance; the current state's band is widened by the hysteresis."""
        bands = self.bands
        if current is not None and current is not LoopState.FAULT:
            for band in bands:
                if band.state is current and band.contains(ohms, self.hysteresis):
                    return current
        for band in bands:
            if band.contains(ohms):
                return band.state
        return LoopState.FAULT


def ohms_from_volts(volts: float, vref: float, pullup_ohms: float) -> float:
    """Loop resistance from the divider voltage; at or above the reference the loop is open."""
    if volts <= 0:
        return 0.0
    if volts >= vref:
        return math.inf
    return pullup_ohms * volts / (vref - volts)


def volts_from_ohms(ohms: float, vref: float, pullup_ohms: float) -> float:
    """Divider voltage for a loop resistance (used by the simulated ADC)."""
    if math.isinf(ohms):
        return vref
    return vref * ohms / (ohms + pullup_ohms)
