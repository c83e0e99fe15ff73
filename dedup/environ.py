"""Temporarily set process environment variables (for child processes and boto3 alike)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def overridden(values: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """Set ``values`` in ``os.environ`` for the ``with`` block, then restore what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
