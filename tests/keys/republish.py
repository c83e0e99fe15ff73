"""What a re-publisher may do to an event without changing it: reorder keys, rewrite numbers."""

from __future__ import annotations

import random
from typing import Any


def reserialised(node: Any, rng: random.Random, *, number_forms: bool = False) -> Any:
    """``node`` with every object's keys shuffled and, with ``number_forms``, integral numbers
    written at random as integers or doubles (``10`` / ``10.0``, as Java or ``JSON.stringify`` do)."""
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {k: reserialised(v, rng, number_forms=number_forms) for k, v in items}
    if isinstance(node, list):
        return [reserialised(v, rng, number_forms=number_forms) for v in node]
    integral = isinstance(node, int | float) and not isinstance(node, bool) and float(node).is_integer()
    if number_forms and integral and abs(node) < 2**53:
        return float(node) if rng.random() < 0.5 else int(node)
    return node
