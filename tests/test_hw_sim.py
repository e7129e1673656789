"""The simulation backend: SimHardware commands read back through the real Inputs path,
and the simulated MCP3008 answering gpiozero's SPI exactly like the chip."""

from __future__ import annotations

import asyncio
import math
import re

import pytest
from gpiozero import MCP3008, DigitalInputDevice
from gpiozero.pins.mock import MockFactory

from edge.alarm.inputs import Inputs, Reading
from edge.config import SiteConfig, parse_config
from edge.config.models import Hardware
from edge.errors import CommandError, EdgeError, HardwareError
from edge.hw.pins import make_pin_factory
from edge.hw.sim import SimFactory, SimHardware
from edge.hw.sim_adc import STATES_KEPT
from edge.loops import LoopState, volts_from_ohms
from edge.pinout import SpiPins, spi_pins

N, A, TS, TC, F = (
    LoopState.NORMAL,
    LoopState.ALARM,
    LoopState.TAMPER_SHORT,
    LoopState.TAMPER_CUT,
    LoopState.FAULT,
)

# zone id -> input table; every wiring the simulator knows, all with debounce 0 so a
# command is seen on the next sample / loop turn.
ZONES = {
    "nc-up": 'kind = "gpio", pin = 17, contact = "nc", pull = "up", debounce_ms = 0',
    "no-up": 'kind = "gpio", pin = 27, contact = "no", pull = "up", debounce_ms = 0',
    "nc-down": 'kind = "gpio", pin = 22, contact = "nc", pull = "down", debounce_ms = 0',
    "no-down": 'kind = "gpio", pin = 23, contact = "no", pull = "down", debounce_ms = 0',
    "seol-nc": 'kind = "adc", channel = 0, wiring = "seol", contact = "nc", debounce_ms = 0',
    "seol-no": 'kind = "adc", channel = 1, wiring = "seol", contact = "no", debounce_ms = 0',
    "deol": 'kind = "adc", channel = 6, wiring = "deol", debounce_ms = 0',
}

# command -> expected classified state, per zone.
EXPECTED = {
    "nc-up": {"trip": A, "restore": N, "open": A, "short": N, "47": N, "4700": A},
    "no-up": {"trip": A, "restore": N, "open": N, "short": A, "47": A, "4700": N},
    "nc-down": {"trip": A, "restore": N, "open": A, "short": N, "0": N, "1e6": A},
    "no-down": {"trip": A, "restore": N, "open": N, "short": A, "99": A, "100": N},
    "seol-nc": {"trip": A, "restore": N, "open": A, "short": TS, "4700": N, "2000": F},
    "seol-no": {"trip": A, "restore": N, "open": TC, "short": A, "4.7k": N, "2000": F},
    "deol": {
        "trip": A,
        "restore": N,
        "open": TC,
        "short": TS,
        "9400": A,
        " 4.7K ": N,
        "7000": F,
        "100000": TC,
    },
}


def site(zones: dict[str, str], extra: str = "") -> SiteConfig:
    text = f'[site]\nid = "sim-site"\n\n[hardware]\nbackend = "sim"\n{extra}\n'
    for zid, spec in zones.items():
        text += f'\n[[zones]]\nid = "{zid}"\ntype = "instant"\ninput = {{ {spec} }}\n'
    return parse_config(text)


def run_sim(cfg: SiteConfig, body: object) -> list[Reading]:
    """SimFactory + SimHardware + the real Inputs on one loop; ``body(sim, inputs)``."""
    changes: list[Reading] = []

    async def main() -> None:
        factory = make_pin_factory(cfg.hardware)
        sim = SimHardware(cfg, factory)
        inputs = Inputs(cfg, factory, asyncio.get_running_loop(), changes.append)
        inputs.start()
        try:
            await body(sim, inputs)  # type: ignore[operator]
        finally:
            inputs.close()

    asyncio.run(main())
    return changes


async def read_back(inputs: Inputs, zid: str) -> LoopState:
    await asyncio.sleep(0)  # GPIO edges hop onto the loop
    await asyncio.sleep(0)
    inputs.poll_once()  # ADC loops are sampled
    return inputs.snapshot()[zid].state


def test_every_zone_starts_at_rest() -> None:
    async def body(sim: SimHardware, inputs: Inputs) -> None:
        pass

    changes = run_sim(site(ZONES), body)
    assert [(c.zone_id, c.state) for c in changes] == [(zid, N) for zid in ZONES]


@pytest.mark.parametrize("zid", list(ZONES))
def test_commands_give_the_expected_state_through_inputs(zid: str) -> None:
    async def body(sim: SimHardware, inputs: Inputs) -> None:
        seen = {}
        for command in EXPECTED[zid]:
            sim.apply(zid, command)
            seen[command] = await read_back(inputs, zid)
            sim.apply(zid, "restore")
            assert await read_back(inputs, zid) is N, f"restore after {command!r}"
        assert seen == EXPECTED[zid]

    run_sim(site(ZONES), body)


def test_commands_only_touch_their_zone() -> None:
    async def body(sim: SimHardware, inputs: Inputs) -> None:
        sim.apply("deol", "trip")
        sim.apply("nc-up", "open")
        for zid in ZONES:
            want = A if zid in ("deol", "nc-up") else N
            assert await read_back(inputs, zid) is want, zid

    run_sim(site(ZONES), body)


def test_descriptions_and_loop_ohms() -> None:
    async def body(sim: SimHardware, inputs: Inputs) -> None:
        assert sim.apply("deol", "9400") == "zone deol: loop 9400 ohms (2.20 V)"
        assert sim.loop_ohms("deol") == 9400
        assert sim.apply("deol", "open") == "zone deol: loop open (3.30 V)"
        assert sim.loop_ohms("deol") == math.inf
        assert sim.apply("deol", "short") == "zone deol: loop 0 ohms (0.00 V)"
        assert sim.apply("nc-up", "trip") == "zone nc-up: contact open (GPIO 17 high)"
        assert sim.apply("nc-up", "restore") == "zone nc-up: contact closed (GPIO 17 low)"
        assert sim.apply("no-down", "trip") == "zone no-down: contact closed (GPIO 23 high)"
        assert sim.loop_ohms("no-down") == 0
        assert sim.apply("no-down", "restore") == "zone no-down: contact open (GPIO 23 low)"
        assert sim.zone_ids == list(ZONES)

    run_sim(site(ZONES), body)


def test_pullup_and_vref_come_from_the_configuration() -> None:
    cfg = site(
        {"deol": ZONES["deol"]},
        extra="[hardware.adc]\nvref = 5.0\npullup_ohms = 10000\n",
    )

    async def body(sim: SimHardware, inputs: Inputs) -> None:
        assert inputs.snapshot()["deol"].volts == pytest.approx(5.0 * 4700 / 14700, abs=0.01)
        assert sim.apply("deol", "10000") == "zone deol: loop 10000 ohms (2.50 V)"
        assert await read_back(inputs, "deol") is A

    run_sim(cfg, body)


@pytest.mark.parametrize(
    "command,fragment",
    [
        ("", "use trip, restore, open, short, or a loop resistance in ohms"),
        ("banana", "unknown command 'banana'"),
        ("trip now", "unknown command"),
        ("-5", "must be a finite number >= 0"),
        ("nan", "must be a finite number >= 0"),
        ("inf", "use 'open' for a cut loop"),
    ],
)
def test_bad_commands_say_what_is_accepted(command: str, fragment: str) -> None:
    async def body(sim: SimHardware, inputs: Inputs) -> None:
        before = sim.loop_ohms("deol")
        with pytest.raises(CommandError, match="zone deol") as err:
            sim.apply("deol", command)
        assert fragment in str(err.value)
        assert isinstance(err.value, ValueError) and isinstance(err.value, EdgeError)
        assert sim.loop_ohms("deol") == before  # nothing changed
        assert await read_back(inputs, "deol") is N

    run_sim(site(ZONES), body)


def test_unknown_zone_lists_the_known_ones() -> None:
    async def body(sim: SimHardware, inputs: Inputs) -> None:
        with pytest.raises(CommandError, match="unknown zone 'attic': known zones are nc-up, "):
            sim.apply("attic", "trip")
        with pytest.raises(CommandError, match="unknown zone"):
            sim.loop_ohms("attic")

    run_sim(site(ZONES), body)


def test_simulator_needs_the_sim_factory() -> None:
    with pytest.raises(HardwareError, match=re.escape('hardware.backend = "sim"')):
        SimHardware(site(ZONES), MockFactory())


def test_two_factories_in_one_process_do_not_share_a_bus() -> None:
    """gpiozero shares SPI buses by pin names; each simulated box must read its own chip."""
    cfg = site({"deol": ZONES["deol"]})
    loop = asyncio.new_event_loop()
    try:
        boxes = []
        for command in ("restore", "short"):
            factory = make_pin_factory(cfg.hardware)
            SimHardware(cfg, factory).apply("deol", command)
            inputs = Inputs(cfg, factory, loop, lambda r: None)
            inputs.start()
            boxes.append(inputs)
        assert [b.snapshot()["deol"].state for b in boxes] == [N, TS]
        for b in boxes:
            b.poll_once()
        assert [b.snapshot()["deol"].state for b in boxes] == [N, TS]
    finally:
        for b in boxes:
            b.close()
        loop.close()


# -- SimMCP3008 on the SPI boundary -----------------------------------------------------------

PINS = SpiPins(clock=11, mosi=10, miso=9, select=8)


def test_channel_selection_single_ended() -> None:
    factory = SimFactory(vref=3.3)
    chip = factory.mcp3008(PINS)
    volts = [0.0, 0.33, 0.8, 1.25, 1.65, 2.2, 3.0, 3.3]
    for ch, v in enumerate(volts):
        chip.set_volts(ch, v)
    devices = [MCP3008(ch, pin_factory=factory, **PINS.as_kwargs()) for ch in range(8)]
    try:
        raws = [d.raw_value for d in devices]
        # floor(1024 * Vin / Vref), saturating at 1023 (datasheet equation 4-2).
        assert raws == [0, 102, 248, 387, 512, 682, 930, 1023]
        # Reading in another order gives the same answers (no state leaks between frames).
        assert [devices[ch].raw_value for ch in (7, 0, 5, 2)] == [1023, 0, 682, 248]
        assert devices[4].voltage == pytest.approx(1.65, abs=3.3 / 1024)
    finally:
        for d in devices:
            d.close()


def test_pseudo_differential_pairs() -> None:
    factory = SimFactory(vref=3.3)
    chip = factory.mcp3008(PINS)
    chip.set_volts(0, 2.0)
    chip.set_volts(1, 0.5)
    devices = [
        MCP3008(ch, differential=True, pin_factory=factory, **PINS.as_kwargs()) for ch in (0, 1)
    ]
    try:
        # CH0 = IN+ / CH1 = IN- reads 1.5 V; the swapped pair is negative and reads 0.
        assert [d.raw_value for d in devices] == [int(1024 * 1.5 / 3.3), 0]
    finally:
        for d in devices:
            d.close()


def frame(leading_zeros: int, single: bool, channel: int) -> list[int]:
    bits = [0] * leading_zeros + [1, int(single), channel >> 2 & 1, channel >> 1 & 1, channel & 1]
    bits += [0] * (2 + 10 + 9)  # sample clock, null bit, MSB-first result, LSB-first repeat
    bits += [0] * (-len(bits) % 8)
    return [int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8)]


def unpack(words: list[int]) -> list[int]:
    return [int(b) for w in words for b in f"{w:08b}"]


@pytest.mark.parametrize("leading_zeros", range(8))
def test_start_bit_is_found_wherever_it_is(leading_zeros: int) -> None:
    """Raw SPI frames: the first 1 with CS low is the start bit, as on the chip."""
    factory = SimFactory(vref=3.3)
    chip = factory.mcp3008(PINS)
    codes = {}
    for ch in range(8):
        chip.set_volts(ch, 0.3 + 0.37 * ch)
        codes[ch] = chip.code(True, ch)
    spi = factory.spi(**PINS.as_kwargs())
    try:
        for ch in range(8):
            rx = unpack(spi.transfer(frame(leading_zeros, True, ch)))
            start = leading_zeros + 5  # bits after the start bit and 4 control bits
            assert rx[start] == 0  # sample clock (high-Z)
            assert rx[start + 1] == 0  # null bit
            msb = rx[start + 2 : start + 12]
            assert int("".join(map(str, msb)), 2) == codes[ch], ch
            lsb_repeat = rx[start + 12 : start + 21]
            assert lsb_repeat == msb[:-1][::-1]  # B1..B9, LSB first
            assert not any(rx[start + 21 :])  # then zeros
    finally:
        spi.close()


def test_chip_rejects_bad_inputs() -> None:
    chip = SimFactory().mcp3008(PINS)
    with pytest.raises(ValueError, match=r"channel must be 0\.\.7"):
        chip.set_volts(8, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        chip.set_volts(0, -0.1)
    chip.set_volts(0, 9.0)  # above the reference: saturates like the chip
    assert chip.code(True, 0) == 1023


def test_sim_pin_contact_overrides_the_pull() -> None:
    factory = SimFactory()
    pin = factory.pin(17)
    pin.connect(False)  # contact closed to ground before anyone configured the pin
    device = DigitalInputDevice(17, pull_up=True, pin_factory=factory)
    try:
        assert device.is_active  # the pull-up did not win over the closed contact
        pin.connect(None)
        assert not device.is_active
    finally:
        device.close()


def test_spi_pins_follow_the_configuration() -> None:
    assert spi_pins(Hardware().adc) == PINS
    one = Hardware.model_validate({"adc": {"spi_port": 1, "spi_device": 1}})
    assert spi_pins(one.adc) == SpiPins(clock=21, mosi=20, miso=19, select=17)
    dev1 = Hardware.model_validate({"adc": {"spi_device": 1}})
    assert spi_pins(dev1.adc).select == 7


def test_sim_backend_on_spi_device_1() -> None:
    cfg = site({"deol": ZONES["deol"]}, extra="[hardware.adc]\nspi_device = 1\n")

    async def body(sim: SimHardware, inputs: Inputs) -> None:
        sim.apply("deol", "trip")
        assert await read_back(inputs, "deol") is A

    assert run_sim(cfg, body)[0].state is N


def test_real_gpio_backend_off_a_pi_explains_the_fix() -> None:
    try:
        factory = make_pin_factory(Hardware(backend="gpio"))
    except HardwareError as exc:
        assert "no GPIO chip found" in str(exc)
        assert 'hardware.backend = "sim"' in str(exc)
        assert isinstance(exc, OSError)
    else:  # pragma: no cover - only on a real Raspberry Pi
        factory.close()
        pytest.skip("running on a Raspberry Pi: the real factory loaded")


def test_sim_factory_uses_configured_vref() -> None:
    factory = make_pin_factory(Hardware.model_validate({"backend": "sim", "adc": {"vref": 5.0}}))
    assert isinstance(factory, SimFactory)
    chip = factory.mcp3008(PINS)
    chip.set_volts(3, volts_from_ohms(4700, 5.0, 4700))
    assert chip.code(True, 3) == 512


def test_pin_history_stays_bounded_over_a_long_run() -> None:
    """gpiozero's MockPin keeps every change; ours keep the last STATES_KEPT, on the contact
    pins and on the SPI pins that each ADC read clocks about a hundred times."""
    cfg = site({"nc-up": ZONES["nc-up"], "deol": ZONES["deol"]})
    lengths: dict[str, int] = {}

    async def body(sim: SimHardware, inputs: Inputs) -> None:
        factory = sim._factory
        for n in range(2000):
            inputs.poll_once()
            sim.apply("nc-up", "trip" if n % 2 else "restore")
        sim.apply("deol", "trip")
        assert await read_back(inputs, "deol") is A  # the chip still answers correctly
        lengths.update({pin.info.name: len(pin.states) for pin in factory.pins.values()})

    run_sim(cfg, body)
    spi = {f"GPIO{n}" for n in (PINS.clock, PINS.mosi, PINS.miso, PINS.select)}
    assert spi | {"GPIO17"} <= set(lengths), lengths
    assert max(lengths.values()) == STATES_KEPT, lengths  # full: far more changes happened
    assert lengths[f"GPIO{PINS.clock}"] == STATES_KEPT
