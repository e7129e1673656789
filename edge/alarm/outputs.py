"""Relay outputs (siren, lights, gate, fog): switched, time-limited, read back and journaled.

Outputs are driven by remote operators and by the siren rule, so three promises hold whatever
the caller does: an output is never left on beyond its ``max_on_s`` (a forgotten "on" must not
run a siren all night or keep a gate open), every change is journaled with who asked and why,
and after every write the pin level is read back so a stuck or shorted driver is reported
instead of being believed.

All methods must be called from the event loop's thread: the off timers are
``loop.call_later`` handles, which are not thread-safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Callable
from typing import Any

from gpiozero import GPIOZeroError, OutputDevice

from edge.config.models import Output
from edge.errors import CommandError, HardwareError
from edge.events import Event, Kind

log = logging.getLogger(__name__)

REASON_MAX_ON = "max on-time"
REASON_PULSE_END = "pulse end"
REASON_STOPPING = "service stopping"


def _iso(at: dt.datetime) -> str:
    """Same format as event timestamps (UTC, milliseconds, Z) so operators compare them."""
    at = at.astimezone(dt.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass
class _Channel:
    """Runtime state of one output: what we commanded and when it must end."""

    spec: Output
    device: OutputDevice | None = None
    on: bool = False
    since: str = ""
    until: str | None = None
    timer: asyncio.TimerHandle | None = None


class OutputBank:
    """Every relay output of the site, with its safety timer and read-back."""

    def __init__(
        self,
        outputs: list[Output],
        factory: Any,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[Event], None],
    ) -> None:
        self._factory = factory
        self._loop = loop
        self._on_event = on_event
        self._channels = {o.id: _Channel(o) for o in outputs}
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Claim every pin, all relays de-energised; a pin that cannot be claimed is fatal."""
        created: list[OutputDevice] = []
        try:
            for ch in self._channels.values():
                ch.device = self._open(ch.spec)
                created.append(ch.device)
                ch.on, ch.since, ch.until = False, _iso(_now()), None
        except HardwareError:
            for device in created:
                device.close()
            raise
        self._started = True
        log.info("outputs ready: %s", ", ".join(self._channels) or "(none)")

    def _open(self, spec: Output) -> OutputDevice:
        try:
            return OutputDevice(
                spec.pin,
                active_high=spec.active_high,
                initial_value=False,
                pin_factory=self._factory,
            )
        except GPIOZeroError as exc:
            raise HardwareError(
                f"output {spec.id!r}: cannot drive GPIO {spec.pin}: {exc}; check that no other "
                f"program uses the pin and that the service may open /dev/gpiochip*"
            ) from exc

    def close(self) -> None:
        """Turn everything off (journaled) and release the pins; safe to call twice."""
        for ch in self._channels.values():
            self._cancel_timer(ch)
            if ch.device is None:
                continue
            if ch.on:
                self._apply(ch, False, reason=REASON_STOPPING, user=None)
            ch.device.close()
            ch.device = None
        self._started = False

    # -- commands ----------------------------------------------------------------------------

    def on(self, output_id: str, *, reason: str = "", user: str | None = None) -> dict[str, Any]:
        """Latched outputs stay on until off() or max_on_s; pulsed outputs pulse for pulse_s."""
        ch = self._channel(output_id)
        if ch.spec.mode == "pulsed":
            return self._pulse(ch, ch.spec.pulse_s, reason, user)
        self._apply(ch, True, reason=reason, user=user)
        self._arm_timer(ch, ch.spec.max_on_s, REASON_MAX_ON)
        return self.state(output_id)

    def off(self, output_id: str, *, reason: str = "", user: str | None = None) -> dict[str, Any]:
        ch = self._channel(output_id)
        self._cancel_timer(ch)
        self._apply(ch, False, reason=reason, user=user)
        return self.state(output_id)

    def pulse(
        self,
        output_id: str,
        seconds: float | None = None,
        *,
        reason: str = "",
        user: str | None = None,
    ) -> dict[str, Any]:
        """On for ``seconds`` (default pulse_s), then off; overrides a latched on."""
        ch = self._channel(output_id)
        if seconds is None:
            return self._pulse(ch, ch.spec.pulse_s, reason, user)
        try:
            length = float(seconds)  # remote commands carry JSON: "5" or 5 both mean 5 s
        except (TypeError, ValueError):
            length = math.nan
        if not (math.isfinite(length) and 0 < length <= ch.spec.max_on_s):
            raise CommandError(
                f"output {output_id!r}: pulse of {seconds!r} s refused; give a number of "
                f"seconds more than 0 and at most max_on_s = {ch.spec.max_on_s:g} s"
            )
        return self._pulse(ch, length, reason, user)

    def _pulse(self, ch: _Channel, seconds: float, reason: str, user: str | None) -> dict[str, Any]:
        self._apply(ch, True, reason=reason, user=user, seconds=seconds)
        self._arm_timer(ch, seconds, REASON_PULSE_END)
        return self.state(ch.spec.id)

    # -- state -------------------------------------------------------------------------------

    def state(self, output_id: str) -> dict[str, Any]:
        """Commanded state and the level actually read on the pin (they differ if stuck)."""
        ch = self._channel(output_id)
        return {
            "id": ch.spec.id,
            "on": ch.on,
            "readback": self._readback(ch),
            "since": ch.since,
            "until": ch.until,
        }

    def states(self) -> dict[str, dict[str, Any]]:
        return {oid: self.state(oid) for oid in self._channels}

    # -- internals ---------------------------------------------------------------------------

    def _channel(self, output_id: str) -> _Channel:
        ch = self._channels.get(output_id)
        if ch is None:
            known = ", ".join(sorted(self._channels)) or "none are configured"
            raise CommandError(
                f"unknown output {output_id!r}; outputs of this site: {known} "
                f"(see [[outputs]] in the site configuration)"
            )
        if not self._started:
            raise HardwareError(f"output {output_id!r}: outputs are not started (start() first)")
        return ch

    def _readback(self, ch: _Channel) -> bool:
        """Logical level on the pin, honouring active_high (on = energised relay)."""
        if ch.device is None:
            return False
        try:
            return bool(ch.device.value)
        except GPIOZeroError as exc:
            raise HardwareError(
                f"output {ch.spec.id!r}: cannot read GPIO {ch.spec.pin}: {exc}"
            ) from exc

    def _apply(
        self,
        ch: _Channel,
        on: bool,
        *,
        reason: str,
        user: str | None,
        seconds: float | None = None,
    ) -> None:
        """Drive the pin, check it took, and journal a change of the commanded state."""
        assert ch.device is not None
        try:
            ch.device.value = on
        except GPIOZeroError as exc:
            raise HardwareError(
                f"output {ch.spec.id!r}: cannot write GPIO {ch.spec.pin}: {exc}"
            ) from exc
        readback = self._check_readback(ch, on)
        changed = ch.on != on
        ch.on = on
        if not changed and readback == on:
            return
        ch.since = _iso(_now())
        details: dict[str, Any] = {
            "output": ch.spec.id,
            "reason": reason,
            "user": user,
            "readback": readback,
            "readback_ok": readback == on,
        }
        if seconds is not None:
            details["seconds"] = seconds
        log.info("output %s %s (%s)", ch.spec.id, "on" if on else "off", reason or "no reason")
        self._on_event(Event(Kind.OUTPUT_ON if on else Kind.OUTPUT_OFF, details=details))

    def _check_readback(self, ch: _Channel, on: bool) -> bool:
        """Level read after a write; a mismatch means the relay is not doing what we said."""
        readback = self._readback(ch)
        if readback != on:
            log.error(
                "output %s (GPIO %d) commanded %s but reads %s: relay driver stuck or shorted",
                ch.spec.id,
                ch.spec.pin,
                "on" if on else "off",
                "on" if readback else "off",
            )
        return readback

    def _arm_timer(self, ch: _Channel, seconds: float, reason: str) -> None:
        """(Re-)arm the single off timer of an output; the newest command wins."""
        self._cancel_timer(ch)
        ch.timer = self._loop.call_later(seconds, self._expire, ch.spec.id, reason)
        ch.until = _iso(_now() + dt.timedelta(seconds=seconds))

    def _cancel_timer(self, ch: _Channel) -> None:
        if ch.timer is not None:
            ch.timer.cancel()
            ch.timer = None
        ch.until = None

    def _expire(self, output_id: str, reason: str) -> None:
        ch = self._channels[output_id]
        ch.timer, ch.until = None, None
        if ch.device is None:
            return
        if reason == REASON_MAX_ON:
            log.warning(
                "output %s reached max_on_s (%g s): turning it off", output_id, ch.spec.max_on_s
            )
        self._apply(ch, False, reason=reason, user=None)
