"""Canonical event samples: JSON files under ``tests/events/`` (importable as ``samples``)."""

from __future__ import annotations

import json
from pathlib import Path

EVENTS_DIR = Path(__file__).parent / "events"


def load_event(name: str) -> dict:
    """A fresh copy of the canonical event ``tests/events/<name>``."""
    return json.loads((EVENTS_DIR / name).read_text())
