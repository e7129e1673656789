"""The site configuration (``/etc/edge/site.toml``) as pydantic models.

Every model forbids unknown keys, bounds every number and describes every field: the
descriptions are what `edge config check` and docs/configuration.md show an installer.
Cross-field rules (a pin used twice, a zone in an unknown partition, overlapping resistor
bands) are checked here too, so a service never starts on a configuration it cannot honour.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.loops import LoopModel

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MCP3008_CHANNELS = 8
ENTRY_DELAY_MAX_S = 45  # EN 50131-1: entry delay must not exceed 45 s


# Characters no configuration value may hold, whatever the field: C0 and C1 controls and DEL (a
# NUL cuts a path short in every C API and crashed path handling; a line break adds lines to the
# generated mosquitto.conf and ACL; an escape sequence rewrites an installer's terminal), line
# and paragraph separators, and bidirectional overrides (a name that reads differently on the
# operator's screen). TOML lets a string carry them through escapes such as "\u0000".
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
PRINTABLE_FIX = "remove it: keys and values are printable text on one line"
_SCAN_LIMIT = 10_000  # strings examined per field: a bound, far above any real configuration


class Strict(BaseModel):
    """Base of every configuration section: unknown keys refused, values frozen, and no string
    anywhere (value, list item, mapping key) carrying a control character."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        # After the field's own validation: sub-sections are model instances by then and have
        # checked their own fields, so the error names the innermost key. (A before-validator
        # would see the raw mappings, and pydantic forbids one on a union's discriminator.)
        problem = unprintable_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def unprintable_problem(value: Any) -> str | None:
    """Why ``value`` (a string, or lists and mappings of them) holds a character no setting
    may hold, or None. Iterative, so a deeply nested value cannot exhaust the stack."""
    stack: list[tuple[Any, str]] = [(value, "")]
    seen = 0
    while stack and seen < _SCAN_LIMIT:
        item, where = stack.pop()
        seen += 1
        if isinstance(item, str):
            m = UNPRINTABLE.search(item)
            if m:
                char = m.group()
                what = "a NUL byte" if char == "\0" else "an invisible control character"
                return (
                    f"{where or 'the value'} contains {what} (U+{ord(char):04X}) at character "
                    f"{m.start() + 1} — {PRINTABLE_FIX}"
                )
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for key, v in item.items():
                stack.append((v, f"{where}[{key!r}]"))
                stack.append((key, f"a key of {where or 'the value'}"))
    return None


class SiteInfo(Strict):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{1,62}$",
        description="Site identifier used in every central topic (sites/<id>/...).",
    )
    name: str = Field("", max_length=120, description="Human name of the site.")
    timezone: str = Field(
        "UTC", max_length=64, description="IANA time zone used for arming schedules."
    )


class Paths(Strict):
    data_dir: str = Field(
        "/var/lib/edge",
        description="Journal, outbox, clips. Relative paths are resolved "
        "against the directory holding the configuration file.",
    )
    run_dir: str = Field("/run/edge", description="Runtime sockets.")


class Bus(Strict):
    url: str = Field(
        "unix:///run/edge/broker.sock",
        description="Box broker: unix:///path/to.sock or mqtt://127.0.0.1:PORT "
        "(loopback only: the box broker is never exposed).",
    )
    identities_dir: str = Field(
        "/etc/edge/secrets/bus",
        max_length=255,
        description="Box-bus identities: one password file per service and local user, and "
        "the broker's hashed password file (`edge bus init` creates them). Relative paths "
        "are resolved against the directory holding the configuration file.",
    )
    keepalive_s: int = Field(30, ge=5, le=600, description="MQTT keepalive.")
    queue_size: int = Field(
        1000, ge=10, le=100_000, description="Bound of every in-process bus queue."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v.startswith("unix://"):
            if not v[len("unix://") :].startswith("/"):
                raise ValueError(
                    "a unix socket URL needs an absolute path: unix:///run/edge/broker.sock"
                )
            return v
        m = re.fullmatch(r"mqtt://([^:/]+):(\d{1,5})", v)
        if not m:
            raise ValueError("use unix:///path/to.sock or mqtt://127.0.0.1:1883")
        if m.group(1) not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the box broker must be on loopback (127.0.0.1) or a unix socket")
        if not 0 < int(m.group(2)) < 65536:
            raise ValueError("port must be between 1 and 65535")
        return v


class Adc(Strict):
    chip: Literal["mcp3008"] = Field("mcp3008", description="ADC used for supervised loops.")
    spi_port: int = Field(0, ge=0, le=1, description="SPI port of the ADC.")
    spi_device: int = Field(0, ge=0, le=1, description="SPI chip-select of the ADC.")
    vref: float = Field(3.3, ge=1.0, le=5.5, description="ADC reference voltage (V).")
    pullup_ohms: float = Field(
        4700, ge=100, le=100_000, description="Pull-up from the reference to each ADC input (ohms)."
    )
    sample_ms: int = Field(10, ge=2, le=500, description="Polling period of the ADC inputs.")


class Hardware(Strict):
    backend: Literal["gpio", "sim"] = Field(
        "gpio",
        description="gpio: real pins through gpiozero; sim: simulated pins and ADC "
        "driven by `edge sim` over the box bus.",
    )
    adc: Adc = Field(default_factory=Adc, description="ADC for supervised loops.")


class GpioInput(Strict):
    kind: Literal["gpio"] = "gpio"
    pin: int = Field(ge=0, le=27, description="BCM GPIO number of the dry contact.")
    contact: Literal["nc", "no"] = Field("nc", description="Normally closed or normally open.")
    pull: Literal["up", "down"] = Field("up", description="Internal pull resistor.")
    debounce_ms: int = Field(
        20, ge=0, le=1000, description="A change must hold this long before it counts."
    )


class AdcInput(Strict):
    kind: Literal["adc"] = "adc"
    channel: int = Field(ge=0, le=MCP3008_CHANNELS - 1, description="MCP3008 channel 0-7.")
    wiring: Literal["seol", "deol"] = Field("deol", description="Single or double end-of-line.")
    contact: Literal["nc", "no"] = Field("nc", description="Contact type (matters for SEOL).")
    eol_ohms: float = Field(4700, ge=100, le=47_000, description="EOL resistor (ohms).")
    alarm_ohms: float = Field(
        4700, ge=100, le=47_000, description="Alarm resistor of a DEOL loop (ohms)."
    )
    tolerance: float = Field(
        0.10, ge=0.01, le=0.3, description="Band half-width as a fraction of the nominal value."
    )
    hysteresis: float = Field(
        0.02, ge=0.0, le=0.1, description="Extra width of the current state's band."
    )
    debounce_ms: int = Field(
        20, ge=0, le=1000, description="A new state must hold this long before it counts."
    )

    def model(self) -> LoopModel:
        return LoopModel(
            self.wiring,
            self.contact,
            self.eol_ohms,
            self.alarm_ohms,
            self.tolerance,
            self.hysteresis,
        )

    @model_validator(mode="after")
    def _bands(self) -> AdcInput:
        for lower, upper in self.model().overlaps():
            raise ValueError(
                f"resistor bands overlap: {lower.state.value} up to {lower.high:.0f} ohms and "
                f"{upper.state.value} from {upper.low:.0f} ohms; choose resistors further apart "
                f"(e.g. eol_ohms=4700, alarm_ohms=4700) or a smaller tolerance"
            )
        return self


InputSpec = Annotated[GpioInput | AdcInput, Field(discriminator="kind")]

ZoneType = Literal[
    "instant",
    "delayed",
    "tamper",
    "panic",
    "holdup",
    "fire",
    "technical",
    "box_tamper",
    "keyswitch",
]


class Zone(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Zone identifier (lowercase).")
    name: str = Field("", max_length=80, description="Name an operator reads.")
    type: ZoneType = Field(description="Zone behaviour.")
    partition: str = Field("main", pattern=ID_PATTERN, description="Partition it belongs to.")
    input: InputSpec = Field(description="Where the loop is wired.")
    part_set: bool = Field(False, description="Also active when the partition is part-set.")
    entry_delay_s: int | None = Field(
        None, ge=0, le=ENTRY_DELAY_MAX_S, description="Override of the partition entry delay."
    )
    technical: Literal["flood", "freezer", "mains", "battery", "other"] = Field(
        "other", description="What a technical zone watches (sets the event codes)."
    )
    keyswitch_mode: Literal["maintained", "momentary"] = Field(
        "maintained", description="Keyswitch: contact held = armed, or each press toggles."
    )

    @property
    def label(self) -> str:
        return self.name or self.id


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Schedule(Strict):
    days: list[Day] = Field(min_length=1, description="Days the schedule applies.")
    arm: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Arming time HH:MM.")
    disarm: str | None = Field(
        None,
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="Disarming time HH:MM (none: stays armed).",
    )
    mode: Literal["full", "part"] = Field("full", description="Full or part-set.")


class Partition(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Partition identifier.")
    name: str = Field("", max_length=80, description="Name an operator reads.")
    entry_delay_s: int = Field(
        30,
        ge=0,
        le=ENTRY_DELAY_MAX_S,
        description="Entry delay of delayed zones (EN 50131: max 45 s).",
    )
    exit_delay_s: int = Field(30, ge=0, le=300, description="Exit delay after arming.")
    swinger_limit: int = Field(
        3, ge=1, le=20, description="Alarms per zone per arming period before shutdown."
    )
    confirmation_window_min: int = Field(
        30, ge=30, le=60, description="Two different zones within this window confirm an alarm."
    )
    schedules: list[Schedule] = Field(default_factory=list, description="Automatic arming.")


class Output(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Output identifier.")
    name: str = Field("", max_length=80, description="Name an operator reads.")
    pin: int = Field(ge=0, le=27, description="BCM GPIO number driving the relay.")
    active_high: bool = Field(True, description="Relay energised by a high level.")
    mode: Literal["latched", "pulsed"] = Field("latched", description="Stay on, or pulse.")
    pulse_s: float = Field(1.0, ge=0.1, le=60, description="Pulse length for pulsed outputs.")
    max_on_s: float = Field(
        900, ge=1, le=86_400, description="Safety limit: the output is turned off after this."
    )

    @model_validator(mode="after")
    def _pulse_within_limit(self) -> Output:
        if self.mode == "pulsed" and self.pulse_s > self.max_on_s:
            raise ValueError(
                f"pulse_s ({self.pulse_s:g} s) is longer than max_on_s ({self.max_on_s:g} s): "
                "shorten the pulse or raise the limit"
            )
        return self


class SirenRule(Strict):
    output: str = Field(pattern=ID_PATTERN, description="Output that drives the siren.")
    cutoff_min: float = Field(3, ge=2, le=15, description="Bell cut-off (minutes).")
    on_fire: bool = Field(True, description="Also sound on fire alarms, armed or not.")


class Journal(Strict):
    keep_events: int = Field(
        10_000, ge=500, le=10_000_000, description="Never prune below this many events."
    )
    keep_days: int = Field(365, ge=30, le=3650, description="Never prune events younger than this.")
    max_events: int = Field(
        1_000_000,
        ge=10_000,
        le=50_000_000,
        description="Hard bound: beyond this the oldest go first.",
    )
