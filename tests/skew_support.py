"""The clock-skew scenario shared by the Redis and DynamoDB skew tests.

Two consumers share one store; each takes the other's events while the other
holds them, and again after the other completed them. On any store that decides
time consistently, every event's effect happens once.
"""

from __future__ import annotations

from collections import Counter

from dedup import Deduplicator


def copies_while_held_and_after(first: Deduplicator, second: Deduplicator, n: int) -> Counter[str]:
    """Effects per event id: ``first`` runs half the events, ``second`` the other half, each
    meeting a copy on the other consumer mid-handler, then each sees the other's copies again."""
    effects: Counter[str] = Counter()
    batch = [{"id": f"e{i}", "source": "com.example", "detail": {}} for i in range(n)]

    def record(event):
        effects[event["id"]] += 1

    def with_a_copy_on(other: Deduplicator):
        def handler(event):
            record(event)
            other.process_batch([dict(event)], record)  # a copy while this consumer holds it

        return handler

    first.process_batch(batch[: n // 2], with_a_copy_on(second))
    second.process_batch(batch[n // 2:], with_a_copy_on(first))
    first.process_batch(batch[n // 2:], record)  # copies after completion, within the window
    second.process_batch(batch[: n // 2], record)
    return effects
