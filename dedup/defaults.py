"""The defaults shared by ``Deduplicator``, the ``dedup`` command and the Lambda entry, defined once.

A change here changes all three: the same settings dedup the same way whether
they come from code, ``--window-s`` or ``DEDUP_WINDOW_S``.
"""

from __future__ import annotations

from typing import Final

DEFAULT_KEY: Final = "auto"
"""Key strategy spec: the Genesys or NICE business key, else a content fingerprint."""
DEFAULT_WINDOW_S: Final = 300.0
"""How long a completed key suppresses duplicates."""
DEFAULT_LEASE_S: Final = 60.0
"""How long a claim blocks other consumers: above the handler's longest run."""
DEFAULT_MODE: Final = "fixed"
"""Window mode: ``fixed`` counts from completion, ``sliding`` extends on every duplicate."""
DEFAULT_PREFIX: Final = "dedup:"
"""Storage-key namespace, so applications can share one store."""
