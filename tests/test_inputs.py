"""Alarm inputs through gpiozero's MockFactory and our simulated MCP3008 (no real pins)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable

import pytest
from gpiozero import DigitalInputDevice
from gpiozero.pins.mock import MockFactory

from edge.alarm.inputs import Inputs, Reading, SampleDebounce, samples_needed
from edge.config import SiteConfig, parse_config
from edge.errors import HardwareError
from edge.hw.sim import SimFactory
from edge.hw.sim_adc import SimMCP3008
from edge.loops import LoopState, volts_from_ohms
from edge.pinout import spi_pins

N, A, TS, TC, F = (
    LoopState.NORMAL,
    LoopState.ALARM,
    LoopState.TAMPER_SHORT,
    LoopState.TAMPER_CUT,
    LoopState.FAULT,
)


def site(*zones: str, sample_ms: int = 10) -> SiteConfig:
    """A real site.toml with the given ``input = {...}`` tables, one zone each."""
    text = f'[site]\nid = "inputs"\n\n[hardware.adc]\nsample_ms = {sample_ms}\n'
    for i, spec in enumerate(zones):
        text += f'\n[[zones]]\nid = "z{i}"\ntype = "instant"\ninput = {{ {spec} }}\n'
    return parse_config(text)


def gpio(pin: int, contact: str = "nc", pull: str = "up", debounce_ms: int = 0) -> str:
    return (
        f'kind = "gpio", pin = {pin}, contact = "{contact}", pull = "{pull}", '
        f"debounce_ms = {debounce_ms}"
    )


def adc(channel: int, wiring: str = "deol", contact: str = "nc", debounce_ms: int = 0) -> str:
    return (
        f'kind = "adc", channel = {channel}, wiring = "{wiring}", contact = "{contact}", '
        f"debounce_ms = {debounce_ms}"
    )


Body = Callable[[Inputs, list[Reading]], Awaitable[None]]


def run_with(cfg: SiteConfig, factory: object, body: Body) -> list[Reading]:
    """Start Inputs on a fresh loop, run ``body``, always close; returns every change."""
    changes: list[Reading] = []

    async def main() -> None:
        inputs = Inputs(cfg, factory, asyncio.get_running_loop(), changes.append)
        inputs.start()
        try:
            await body(inputs, changes)
        finally:
            inputs.close()

    asyncio.run(main())
    return changes


async def settle() -> None:
    """Let call_soon_threadsafe hops run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def wait_for(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


# -- GPIO contacts --------------------------------------------------------------------------

# (contact, pull) -> level of a closed contact; a contact closes to the rail opposite the pull.
CLOSED_LEVEL = {"up": False, "down": True}


@pytest.mark.parametrize("contact", ["nc", "no"])
@pytest.mark.parametrize("pull", ["up", "down"])
def test_contact_logic_for_each_contact_and_pull(contact: str, pull: str) -> None:
    factory = MockFactory()
    pin = factory.pin(17)
    closed_level = CLOSED_LEVEL[pull]
    closed_state, open_state = (N, A) if contact == "nc" else (A, N)

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        # Nothing wired yet: the pull holds the contact "open".
        assert pin.state is not closed_level
        assert [c.state for c in changes] == [open_state]
        pin.drive_high() if closed_level else pin.drive_low()
        await settle()
        assert [c.state for c in changes] == [open_state, closed_state]
        pin.drive_low() if closed_level else pin.drive_high()
        await settle()
        assert [c.state for c in changes] == [open_state, closed_state, open_state]
        assert inputs.snapshot()["z0"].state is open_state

    changes = run_with(site(gpio(17, contact, pull)), factory, body)
    assert {c.zone_id for c in changes} == {"z0"}
    assert all(c.volts is None and c.ohms is None for c in changes)


def test_start_reports_every_zone_once_in_config_order() -> None:
    factory = MockFactory()
    factory.pin(5).drive_low()  # not yet an input: the pull-up will win
    cfg = site(gpio(22, "no", "up"), gpio(5, "nc", "down"), gpio(6, "nc", "up"))

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        assert [(c.zone_id, c.state) for c in changes] == [("z0", N), ("z1", A), ("z2", A)]
        assert set(inputs.snapshot()) == {"z0", "z1", "z2"}

    run_with(cfg, factory, body)


def test_glitch_shorter_than_debounce_produces_nothing() -> None:
    factory = MockFactory()
    pin = factory.pin(17)  # NC, pull-up: closed = low = NORMAL

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        pin.drive_low()
        await asyncio.sleep(0.5)  # a long-held close: accepted once
        assert [c.state for c in changes] == [A, N]
        # A bouncing open/close burst that ends where it started, well inside 150 ms.
        for _ in range(5):
            pin.drive_high()
            await asyncio.sleep(0.002)
            pin.drive_low()
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.4)
        assert [c.state for c in changes] == [A, N]

    run_with(site(gpio(17, "nc", "up", debounce_ms=150)), factory, body)


def test_level_held_longer_than_debounce_produces_exactly_one_change() -> None:
    factory = MockFactory()
    pin = factory.pin(17)
    pin.drive_low()

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        assert [c.state for c in changes] == [A]  # pull-up at start: open
        pin.drive_low()
        # Contact bounce while closing: the hold time restarts at every edge.
        for _ in range(3):
            await asyncio.sleep(0.01)
            pin.drive_high()
            await asyncio.sleep(0.01)
            pin.drive_low()
        last_edge_ns = time.monotonic_ns()
        await wait_for(lambda: len(changes) == 2)
        accepted_after = (time.monotonic_ns() - last_edge_ns) / 1e9
        await asyncio.sleep(0.3)
        assert [c.state for c in changes] == [A, N]
        assert accepted_after >= 0.099  # held for the whole debounce after the last edge
        assert changes[1].mono_ns >= last_edge_ns - 5_000_000  # stamped at the edge

    run_with(site(gpio(17, "nc", "up", debounce_ms=100)), factory, body)


def test_edges_from_another_thread_hop_onto_the_loop() -> None:
    factory = MockFactory()
    pin = factory.pin(17)

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        await asyncio.to_thread(pin.drive_low)  # gpiozero calls back on that thread
        await wait_for(lambda: len(changes) == 2)
        assert [c.state for c in changes] == [A, N]

    run_with(site(gpio(17, "nc", "up", debounce_ms=20)), factory, body)


def test_close_cancels_pending_debounce() -> None:
    factory = MockFactory()
    pin = factory.pin(17)
    changes: list[Reading] = []

    async def main() -> None:
        inputs = Inputs(
            site(gpio(17, debounce_ms=50)), factory, asyncio.get_running_loop(), changes.append
        )
        inputs.start()
        pin.drive_low()
        await settle()
        inputs.close()
        inputs.close()  # idempotent
        await asyncio.sleep(0.15)

    asyncio.run(main())
    assert [c.state for c in changes] == [A]
    # The pin was released: it can be opened again.
    DigitalInputDevice(17, pin_factory=factory).close()


def test_gpio_errors_name_zone_and_pin_and_release_what_opened() -> None:
    factory = MockFactory()
    # GPIO 2 has a fixed pull-up on the Pi: a pull-down zone there cannot work.
    cfg = site(gpio(17), gpio(2, pull="down"))
    inputs = Inputs(cfg, factory, asyncio.new_event_loop(), lambda r: None)
    with pytest.raises(HardwareError, match=r"zone 'z1': cannot open GPIO 2") as err:
        inputs.start()
    assert isinstance(err.value, OSError)
    assert err.value.__cause__ is not None
    DigitalInputDevice(17, pin_factory=factory).close()  # z0 was closed again


def test_pin_in_use_is_a_hardware_error() -> None:
    factory = MockFactory()
    held = DigitalInputDevice(17, pin_factory=factory)
    try:
        inputs = Inputs(site(gpio(17)), factory, asyncio.new_event_loop(), lambda r: None)
        with pytest.raises(HardwareError, match="GPIO 17"):
            inputs.start()
    finally:
        held.close()


# -- ADC loops through the simulated MCP3008 ------------------------------------------------


def chip_for(cfg: SiteConfig, factory: SimFactory) -> SimMCP3008:
    return factory.mcp3008(spi_pins(cfg.hardware.adc))


def set_ohms(chip: SimMCP3008, cfg: SiteConfig, channel: int, ohms: float) -> None:
    adc_cfg = cfg.hardware.adc
    chip.set_volts(channel, volts_from_ohms(ohms, adc_cfg.vref, adc_cfg.pullup_ohms))


def test_adc_start_state_and_snapshot_values() -> None:
    cfg = site(adc(0), adc(3, "seol", "nc"), adc(7, "seol", "no"))
    factory = SimFactory(vref=cfg.hardware.adc.vref)
    chip = chip_for(cfg, factory)
    set_ohms(chip, cfg, 0, 4700)
    set_ohms(chip, cfg, 3, math.inf)
    set_ohms(chip, cfg, 7, 0)

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        assert [(c.zone_id, c.state) for c in changes] == [("z0", N), ("z1", A), ("z2", A)]
        snap = inputs.snapshot()
        assert snap["z0"].volts == pytest.approx(1.65, abs=0.005)  # half of 3.3 V
        assert snap["z0"].ohms == pytest.approx(4700, abs=25)  # within one ADC step
        assert snap["z1"].ohms == math.inf
        assert snap["z1"].volts == pytest.approx(3.3)
        assert snap["z2"].ohms == pytest.approx(0, abs=5)

    run_with(cfg, factory, body)


def test_adc_state_change_needs_consecutive_samples() -> None:
    cfg = site(adc(2, debounce_ms=20), sample_ms=10)  # 3 samples spanning 20 ms
    assert samples_needed(20, 10) == 3
    factory = SimFactory()
    chip = chip_for(cfg, factory)
    set_ohms(chip, cfg, 2, 4700)

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        assert [c.state for c in changes] == [N]
        set_ohms(chip, cfg, 2, 9400)  # DEOL alarm
        inputs.poll_once()
        inputs.poll_once()
        assert [c.state for c in changes] == [N]
        set_ohms(chip, cfg, 2, 4700)  # the glitch ends before the third sample
        inputs.poll_once()
        assert [c.state for c in changes] == [N]
        set_ohms(chip, cfg, 2, 9400)
        for _ in range(2):
            inputs.poll_once()
        assert [c.state for c in changes] == [N]
        # The snapshot already shows the new resistance, with the old accepted state.
        assert inputs.snapshot()["z0"].ohms == pytest.approx(9400, rel=0.01)
        assert inputs.snapshot()["z0"].state is N
        inputs.poll_once()
        assert [c.state for c in changes] == [N, A]
        assert changes[1].ohms == pytest.approx(9400, rel=0.01)
        for _ in range(5):
            inputs.poll_once()
        assert len(changes) == 2

    run_with(cfg, factory, body)


def test_adc_hysteresis_holds_state_near_the_band_edge() -> None:
    cfg = site(adc(1))
    factory = SimFactory()
    chip = chip_for(cfg, factory)
    set_ohms(chip, cfg, 1, 4700)

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        set_ohms(chip, cfg, 1, 5200)  # beyond the 5170 edge, inside the 2 % margin
        inputs.poll_once()
        assert [c.state for c in changes] == [N]
        set_ohms(chip, cfg, 1, 5400)  # beyond the margin: between bands
        inputs.poll_once()
        assert [c.state for c in changes] == [N, F]
        set_ohms(chip, cfg, 1, 5200)  # a fault has no margin: still between bands
        inputs.poll_once()
        assert [c.state for c in changes] == [N, F]
        set_ohms(chip, cfg, 1, 0)
        inputs.poll_once()
        assert [c.state for c in changes] == [N, F, TS]

    run_with(cfg, factory, body)


def test_run_adc_polls_and_beats() -> None:
    cfg = site(adc(4, debounce_ms=20), sample_ms=5)
    factory = SimFactory()
    chip = chip_for(cfg, factory)
    set_ohms(chip, cfg, 4, 4700)
    beats: list[int] = []

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        task = asyncio.create_task(inputs.run_adc(beat=lambda: beats.append(1)))
        await wait_for(lambda: len(beats) >= 3)
        set_ohms(chip, cfg, 4, math.inf)
        await wait_for(lambda: len(changes) == 2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert [c.state for c in changes] == [N, TC]

    run_with(cfg, factory, body)
    assert len(beats) >= 5  # at least 1 + 4 samples of the new state


def test_run_adc_beats_without_adc_zones() -> None:
    beats: list[int] = []

    async def body(inputs: Inputs, changes: list[Reading]) -> None:
        task = asyncio.create_task(inputs.run_adc(beat=lambda: beats.append(1)))
        await wait_for(lambda: len(beats) >= 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_with(site(gpio(17)), MockFactory(), body)
    assert len(beats) >= 3


def test_adc_errors_name_zone_channel_and_bus() -> None:
    cfg = site(gpio(17), adc(5))
    factory = SimFactory()
    held = DigitalInputDevice(8, pin_factory=factory)  # something else holds the chip select
    try:
        inputs = Inputs(cfg, factory, asyncio.new_event_loop(), lambda r: None)
        with pytest.raises(
            HardwareError, match=r"zone 'z1': cannot open MCP3008 channel 5 on SPI 0\.0"
        ):
            inputs.start()
        DigitalInputDevice(17, pin_factory=factory).close()  # the GPIO zone was released
    finally:
        held.close()


def test_sample_debounce_unit() -> None:
    d = SampleDebounce(N, 2)
    assert d.feed(A, 1) is None
    assert d.feed(TS, 2) is None  # a different new state restarts the count
    assert d.feed(TS, 3) == 2  # accepted, stamped with its first sample
    assert d.state is TS
    assert d.feed(TS, 4) is None
    assert SampleDebounce(N, 1).feed(A, 7) == 7
    assert samples_needed(0, 10) == 1
    assert samples_needed(5, 10) == 2
