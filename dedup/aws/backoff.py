"""Bounded exponential backoff with jitter, shared by the producer and the consumer."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``attempt`` (0-based): ``base_delay_ms * 2**attempt`` capped at
    ``max_delay_ms``, with "equal jitter" (a uniform draw over its upper half) so that
    many clients retrying at once spread out yet still back off."""

    base_delay_ms: float = 100.0
    max_delay_ms: float = 5_000.0

    def __post_init__(self) -> None:
        if self.base_delay_ms < 0 or self.max_delay_ms < self.base_delay_ms:
            raise ValueError(f"need 0 <= base_delay_ms <= max_delay_ms, got {self}")

    def delay_ms(self, attempt: int, rng: random.Random) -> float:
        ceiling_ms = min(self.max_delay_ms, self.base_delay_ms * 2 ** min(attempt, 62))
        return ceiling_ms / 2 + rng.uniform(0, ceiling_ms / 2)
