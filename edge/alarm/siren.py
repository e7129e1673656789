"""The local siren rule: when the siren output goes on, and when it must go off.

The siren sounds for burglary alarms of an armed partition and, when ``on_fire``, for fire
alarms whatever the arming state. Hold-up alarms never sound it (a hold-up is silent by
definition: a siren endangers the person under duress); panic and tamper do not either,
because the site rule has no setting for them.

The siren is shared by every partition, so it remembers which partitions made it sound: a
disarm silences it only when no other partition still wants it. The bell cut-off is absolute
for one sounding (EN 50131-1: a re-triggering alarm does not extend it); after the cut-off a
new alarm sounds it again with a fresh cut-off, and the swinger limit bounds how often.

Pure state, no I/O: the panel turns the returned actions into output commands.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from edge.config.models import SirenRule
from edge.events import Event, Kind

# Bell period used for the partition's ``alarm`` state when the site has no siren rule.
DEFAULT_BELL_S = 180.0


@dataclasses.dataclass(frozen=True)
class OutputAction:
    """A command for the output layer; ``reason`` is journaled with the output change."""

    output: str
    op: Literal["on", "off"]
    reason: str


class Siren:
    """Which partitions keep the siren on, and until when."""

    def __init__(self, rule: SirenRule | None) -> None:
        self.rule = rule
        self.causes: set[str] = set()
        self.until: float | None = None

    @property
    def on(self) -> bool:
        return self.until is not None

    @property
    def bell_s(self) -> float:
        """Length of one sounding, also the length of a partition's ``alarm`` state."""
        return self.rule.cutoff_min * 60.0 if self.rule else DEFAULT_BELL_S

    def sound(
        self, partition: str, at: float, reason: str, fire: bool = False
    ) -> list[OutputAction]:
        """Turn the siren on for ``partition`` (no action when already on or not wanted)."""
        if self.rule is None or (fire and not self.rule.on_fire):
            return []
        self.causes.add(partition)
        if self.until is not None:
            return []
        self.until = at + self.bell_s
        return [OutputAction(self.rule.output, "on", reason)]

    def silence(self, partition: str, reason: str) -> list[OutputAction]:
        """A disarm of ``partition``: off when no other partition keeps the siren on."""
        self.causes.discard(partition)
        if self.rule is None or self.until is None or self.causes:
            return []
        self.until = None
        return [OutputAction(self.rule.output, "off", reason)]

    def cutoff(self, at: float) -> tuple[list[OutputAction], list[Event]]:
        """The bell cut-off: off, and a SIREN_CUTOFF event for the journal."""
        if self.rule is None or self.until is None:
            return [], []
        partitions = sorted(self.causes)
        self.until = None
        self.causes.clear()
        event = Event(
            Kind.SIREN_CUTOFF,
            partition=partitions[0] if len(partitions) == 1 else None,
            details={
                "output": self.rule.output,
                "cutoff_min": self.rule.cutoff_min,
                "partitions": partitions,
            },
            mono_ns=int(at * 1e9),
        )
        return [OutputAction(self.rule.output, "off", "bell cut-off")], [event]

    def status(self) -> dict[str, object]:
        return {
            "output": self.rule.output if self.rule else None,
            "on": self.on,
            "until": self.until,
            "partitions": sorted(self.causes),
        }
