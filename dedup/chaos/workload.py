"""The seeded workload of a chaos run: good events, poison of three kinds, and which events fail or lag."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from dedup.chaos.config import ChaosConfig
from dedup.keys import derive_key, key_strategy
from dedup.traces import logical_events

KEY_SPEC = "auto"
POISON_MARKER = "chaosPoison"  # how a keyless poison event's detail (text, not an object) starts
NOT_JSON_MARKER = "chaos-poison-not-json"


@dataclass(frozen=True)
class Workload:
    """What the run publishes, with the dedup key of every event that has one."""

    good: tuple[dict[str, Any], ...]
    good_keys: tuple[str, ...]
    handler_poison: tuple[dict[str, Any], ...]  # keyed events whose handler always fails
    handler_poison_keys: tuple[str, ...]
    keyless: tuple[dict[str, Any], ...]  # events no key strategy can key (detail is text, not an object)
    not_json: tuple[str, ...]  # raw bodies that are not JSON
    transient_keys: tuple[str, ...]
    slow_keys: tuple[str, ...]
    kill_keys: dict[str, tuple[str, ...]]  # by kill point: the good events whose handling triggers a kill


def build_workload(config: ChaosConfig) -> Workload:
    """``config.events`` distinct logical events plus ``poison_per_kind`` poison of each kind."""
    n, p = config.events, config.poison_per_kind
    events = logical_events(n + 2 * p, source=config.source, seed=config.seed)  # type: ignore[arg-type]
    strategy = key_strategy(KEY_SPEC)
    keys = [derive_key(strategy, e) for e in events[:n + p]]
    rng = random.Random(config.seed)
    picks = rng.sample(range(n), config.transient + config.slow + sum(config.kills.values()))
    kill_picks = iter(picks[config.transient + config.slow:])
    return Workload(
        good=tuple(events[:n]),
        good_keys=tuple(keys[:n]),
        handler_poison=tuple(events[n:n + p]),
        handler_poison_keys=tuple(keys[n:n + p]),
        keyless=tuple({**e, "detail": f"{POISON_MARKER}:keyless-{i}"} for i, e in enumerate(events[n + p:])),
        not_json=tuple(f"<html>{NOT_JSON_MARKER}-{i}: 502 Bad Gateway</html>" for i in range(p)),
        transient_keys=tuple(keys[i] for i in picks[:config.transient]),
        slow_keys=tuple(keys[i] for i in picks[config.transient:config.transient + config.slow]),
        kill_keys={point: tuple(keys[next(kill_picks)] for _ in range(count))
                   for point, count in config.kills.items()},
    )
