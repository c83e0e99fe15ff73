"""What a synthetic trace looks like: volumes, the daily profile, the duplicate processes.

Every knob of the generator is a field of :class:`TraceConfig` (frozen, so a
config can key the on-disk cache). Durations carry their unit in the name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from dedup.errors import ConfigurationError

Source = Literal["genesys", "nice", "mixed"]
SOURCES: tuple[str, ...] = ("genesys", "nice", "mixed")

#: Where traces start when no start time is given (2024-03-04T00:00:00Z, a Monday).
DEFAULT_START_S = 1_709_510_400.0

#: Relative arrival rate per hour of day (UTC taken as the contact centre's local time):
#: quiet nights, a morning ramp, a lunch dip and an afternoon peak.
DAILY_PROFILE = (
    0.15, 0.10, 0.08, 0.08, 0.10, 0.20, 0.50, 1.20, 2.20, 2.80, 3.00, 2.90,
    2.30, 2.50, 2.90, 2.80, 2.50, 2.00, 1.40, 0.90, 0.60, 0.45, 0.30, 0.20,
)  # fmt: skip


@dataclass(frozen=True)
class Duplicates:
    """The duplicate processes and their parameters.

    * Delivery duplicates: the consumer did not delete a message in time and SQS
      delivers the same envelope again after the visibility timeout (plus the
      poll wait and processing jitter). Each delivery is redelivered with
      probability ``delivery_p``, so a message can come back more than once.
    * Producer re-publishes: a PutEvents call timed out although it succeeded,
      and the producer retried with exponential backoff and jitter: a new
      envelope ``id`` and ``time``, the same ``detail``. Each attempt is retried
      with probability ``publish_p``, at most ``max_publishes`` times.
    * Late duplicates: rare copies minutes to a day later (EventBridge retrying
      a target for up to 24 h with the same envelope; Genesys re-sending queued
      notifications after an outage with a new one), log-uniform in
      ``[late_min_s, late_max_s]``.
    """

    delivery_p: float = 0.01
    visibility_timeout_s: float = 30.0
    redelivery_jitter_s: float = 6.0
    publish_p: float = 0.012
    publish_timeout_s: float = 1.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 20.0
    max_publishes: int = 5
    late_p: float = 0.0005
    late_min_s: float = 60.0
    late_max_s: float = 86_400.0
    late_same_envelope_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("delivery_p", "publish_p", "late_p"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigurationError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0.0 <= self.late_same_envelope_share <= 1.0:
            raise ConfigurationError("late_same_envelope_share must be in [0, 1]")
        for name in ("visibility_timeout_s", "publish_timeout_s", "backoff_base_s", "backoff_cap_s",
                     "late_min_s", "late_max_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.redelivery_jitter_s < 0:
            raise ConfigurationError("redelivery_jitter_s must be >= 0")
        if self.late_max_s < self.late_min_s:
            raise ConfigurationError("late_max_s must be >= late_min_s")
        if not 0 <= self.max_publishes <= 20:
            raise ConfigurationError("max_publishes must be in 0..20")


@dataclass(frozen=True)
class TraceConfig:
    """A synthetic trace: ``n_events`` delivered messages (duplicates included), seeded.

    Rates are per day on average; the :data:`DAILY_PROFILE` shapes them over
    the day. ``nice_share`` is the NICE share of contacts in a ``mixed`` trace.
    Agent notifications (Genesys routing status, activity and conversation
    summaries; NICE agent states) follow the contacts agents handle; NICE agents
    log in once a day for ``agent_shift_s``.
    """

    n_events: int = 100_000
    source: Source = "genesys"
    seed: int = 0
    start_s: float = DEFAULT_START_S
    conversations_per_day: float = 4_000.0
    voice_share: float = 0.7
    abandon_p: float = 0.08
    attribute_updates_mean: float = 2.0
    utterance_gap_s: float = 12.0
    audits_per_day: float = 3_000.0
    presence_changes_per_day: float = 4_000.0
    queue_observations_per_day: float = 3_000.0
    flow_publishes_per_day: float = 20.0
    chat_message_gap_s: float = 45.0
    agent_shift_s: float = 8.5 * 3600
    agents: int = 150
    nice_share: float = 0.4
    duplicates: Duplicates = field(default_factory=Duplicates)
    profile: tuple[float, ...] = DAILY_PROFILE

    def __post_init__(self) -> None:
        if isinstance(self.n_events, bool) or not isinstance(self.n_events, int) or self.n_events < 0:
            raise ConfigurationError(f"n_events must be an integer >= 0, got {self.n_events!r}")
        if self.source not in SOURCES:
            raise ConfigurationError(f"source must be one of {', '.join(SOURCES)}; got {self.source!r}")
        for name in ("voice_share", "abandon_p", "nice_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigurationError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("conversations_per_day", "utterance_gap_s", "chat_message_gap_s", "agent_shift_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("audits_per_day", "presence_changes_per_day", "attribute_updates_mean",
                     "queue_observations_per_day", "flow_publishes_per_day"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.agent_shift_s > 10 * 3600:
            raise ConfigurationError("agent_shift_s must be at most 10 h (shifts start 06:00-14:00 UTC "
                                     "and end the same day)")
        if self.agents < 1:
            raise ConfigurationError("agents must be at least 1")
        if len(self.profile) != 24 or min(self.profile) < 0 or sum(self.profile) <= 0:
            raise ConfigurationError("profile needs 24 non-negative hourly weights, not all zero")

    def replace(self, **changes: object) -> TraceConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
