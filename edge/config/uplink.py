"""The `[heartbeat]` and `[outbox]` sections: how often the box proves it is alive, and how
much it keeps (and how patiently it retries) while the central station cannot be reached."""

from __future__ import annotations

from pydantic import Field, model_validator

from edge.config.models import Strict


class HeartbeatConfig(Strict):
    interval_s: int = Field(
        60,
        ge=10,
        le=86_400,
        description="Seconds between heartbeats (cyclic test), 10 s to 24 h. The central "
        "station raises 'box silent' when one is late: agree the interval with it.",
    )


class OutboxConfig(Strict):
    max_rows: int = Field(
        1_000_000,
        ge=1_000,
        le=10_000_000,
        description="Events kept per transport while the central station is unreachable; "
        "beyond this the lowest-priority, oldest go first (telemetry before alarms).",
    )
    backoff_min_s: float = Field(
        5.0,
        ge=1.0,
        le=300.0,
        description="Wait for an ack before the first resend; doubles after each resend.",
    )
    backoff_max_s: float = Field(
        300.0,
        ge=10.0,
        le=3_600.0,
        description="Longest wait between resends of an unacknowledged event.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> OutboxConfig:
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_min_s ({self.backoff_min_s:g} s) is longer than backoff_max_s "
                f"({self.backoff_max_s:g} s): lower the minimum or raise the maximum"
            )
        return self

    @property
    def backoff_s(self) -> tuple[float, float]:
        """The (min, max) pair :class:`edge.uplink.outbox.Outbox` takes."""
        return (self.backoff_min_s, self.backoff_max_s)
