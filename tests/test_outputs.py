"""Relay outputs on gpiozero mock pins, with a real asyncio loop driving the off timers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from edge.alarm.outputs import OutputBank
from edge.config.models import Output
from edge.errors import CommandError, HardwareError
from edge.events import Event, Kind

SIREN = {"id": "siren", "pin": 20, "max_on_s": 1}
GATE = {"id": "gate", "pin": 21, "mode": "pulsed", "pulse_s": 0.1, "max_on_s": 5}
LIGHT = {"id": "light", "pin": 22, "active_high": False}


class StuckLowPin(MockPin):
    """A driver whose output never leaves low (burnt transistor, pin shorted to ground)."""

    def _change_state(self, value: bool) -> bool:
        return False


def run(
    specs: list[dict[str, Any]],
    body: Callable[[OutputBank, MockFactory, list[Event]], Awaitable[None]],
    factory: MockFactory | None = None,
) -> list[Event]:
    """Run ``body`` against a started bank inside a real event loop; returns the journal."""
    events: list[Event] = []
    factory = factory or MockFactory()

    async def main() -> None:
        outputs = [Output.model_validate(s) for s in specs]
        bank = OutputBank(outputs, factory, asyncio.get_running_loop(), events.append)
        bank.start()
        try:
            await body(bank, factory, events)
        finally:
            bank.close()

    asyncio.run(main())
    return events


def level(factory: MockFactory, pin: int) -> bool:
    return bool(factory.pin(pin).state)


def test_start_claims_pins_with_every_relay_off() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        assert level(factory, 20) is False
        assert level(factory, 22) is True  # active-low relay: off = high
        assert {k: v["on"] for k, v in bank.states().items()} == {"siren": False, "light": False}
        assert events == []

    run([SIREN, LIGHT], body)


def test_latched_on_stays_on_until_off() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        state = bank.on("light", reason="operator test", user="op7")
        assert state["on"] is True and state["readback"] is True and state["until"]
        await asyncio.sleep(0.3)
        assert bank.state("light")["on"] is True
        assert level(factory, 22) is False  # active low: on = pin low
        state = bank.off("light", reason="done", user="op7")
        assert state == {**state, "on": False, "readback": False, "until": None}
        assert level(factory, 22) is True

    events = run([SIREN, LIGHT], body)
    assert [e.kind for e in events] == [Kind.OUTPUT_ON, Kind.OUTPUT_OFF]
    assert events[0].details == {
        "output": "light",
        "reason": "operator test",
        "user": "op7",
        "readback": True,
        "readback_ok": True,
    }
    assert events[1].details["reason"] == "done"


def test_pulsed_output_returns_to_off_after_pulse_s() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        assert bank.on("gate", reason="open gate")["on"] is True
        assert level(factory, 21) is True
        await asyncio.sleep(0.3)
        assert bank.state("gate")["on"] is False
        assert level(factory, 21) is False

    events = run([GATE], body)
    assert [e.kind for e in events] == [Kind.OUTPUT_ON, Kind.OUTPUT_OFF]
    assert events[0].details["seconds"] == pytest.approx(0.1)
    assert events[1].details["reason"] == "pulse end"


def test_explicit_pulse_on_latched_output() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        bank.pulse("siren", 0.1, reason="chirp")
        assert level(factory, 20) is True
        await asyncio.sleep(0.3)
        assert level(factory, 20) is False

    events = run([SIREN], body)
    assert [e.details["reason"] for e in events] == ["chirp", "pulse end"]


def test_max_on_time_turns_a_forgotten_output_off() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        bank.on("siren", reason="alarm")
        await asyncio.sleep(0.6)
        bank.on("siren", reason="alarm again")  # re-arms the 1 s limit
        await asyncio.sleep(0.6)
        assert bank.state("siren")["on"] is True, "re-arming must restart the limit"
        await asyncio.sleep(0.6)
        assert bank.state("siren")["on"] is False
        assert bank.state("siren")["until"] is None
        assert level(factory, 20) is False

    events = run([SIREN], body)
    assert [e.kind for e in events] == [Kind.OUTPUT_ON, Kind.OUTPUT_OFF]
    assert events[-1].details["reason"] == "max on-time"
    assert events[-1].details["user"] is None


def test_off_cancels_the_pending_timer() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        bank.pulse("gate", 0.2)
        bank.off("gate", reason="cancel")
        bank.on("siren")
        bank.off("siren")
        await asyncio.sleep(0.4)

    events = run([GATE, SIREN], body)
    assert [e.details["reason"] for e in events if e.kind is Kind.OUTPUT_OFF] == ["cancel", ""]


def test_repeated_command_is_not_journaled_twice() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        bank.on("light")
        bank.on("light")
        bank.off("light")
        bank.off("light")

    assert [e.kind for e in run([LIGHT], body)] == [Kind.OUTPUT_ON, Kind.OUTPUT_OFF]


def test_close_turns_everything_off_and_journals_it() -> None:
    factory = MockFactory()

    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        bank.on("light")

    events = run([LIGHT], body, factory)
    assert events[-1].kind is Kind.OUTPUT_OFF
    assert events[-1].details["reason"] == "service stopping"
    assert level(factory, 22) is True  # active low, off


def test_stuck_pin_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    factory = MockFactory()
    factory.pin(20, pin_class=StuckLowPin)

    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        state = bank.on("siren", reason="alarm")
        assert state["on"] is True and state["readback"] is False

    with caplog.at_level(logging.ERROR, logger="edge.alarm.outputs"):
        events = run([SIREN], body, factory)
    assert events[0].details["readback"] is False
    assert events[0].details["readback_ok"] is False
    assert any("stuck or shorted" in r.getMessage() for r in caplog.records)


def test_unknown_output_names_the_existing_ones() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        with pytest.raises(CommandError, match=r"'fog'.*gate, siren"):
            bank.on("fog")
        with pytest.raises(ValueError):  # CommandError is also a ValueError
            bank.state("fog")

    assert run([SIREN, GATE], body) == []


def test_pulse_longer_than_max_on_is_refused() -> None:
    async def body(bank: OutputBank, factory: MockFactory, events: list[Event]) -> None:
        with pytest.raises(CommandError, match=r"max_on_s = 5 s"):
            bank.pulse("gate", 6)
        for bad in (0, -1, float("nan"), "soon"):
            with pytest.raises(CommandError):
                bank.pulse("gate", bad)  # type: ignore[arg-type]
        assert level(factory, 21) is False

    assert run([GATE], body) == []


def test_pin_in_use_is_a_hardware_error() -> None:
    async def main() -> None:
        factory = MockFactory()
        loop = asyncio.get_running_loop()
        first = OutputBank([Output.model_validate(SIREN)], factory, loop, lambda e: None)
        first.start()
        clash = Output.model_validate({**LIGHT, "pin": 20})
        second = OutputBank([Output.model_validate(GATE), clash], factory, loop, lambda e: None)
        with pytest.raises(HardwareError, match="GPIO 20"):
            second.start()
        # The pin claimed before the failure was released again.
        OutputBank([Output.model_validate(GATE)], factory, loop, lambda e: None).start()
        first.close()

    asyncio.run(main())
