"""Window stores and the registry that opens one from a URL or name.

``open_store("memory")``, ``open_store("fakeredis")``, ``open_store("redis://host:6379/0")``
or ``rediss://`` with TLS, ``redis+cluster://``, ``dynamodb://TABLE`` (its module and boto3
load only when asked for; without ``dedup[aws]`` the error names that extra), and any scheme
registered with :func:`register_store`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from dedup.clock import Clock
from dedup.errors import ConfigurationError
from dedup.extras import needs_extras, require
from dedup.stores.base import DEFAULT_PREFIX, Claim, ClaimStatus, WindowStore
from dedup.stores.memory import MemoryStore
from dedup.stores.redis import RedisStore, redact_url

StoreFactory = Callable[..., WindowStore]

_FACTORIES: dict[str, StoreFactory] = {}
# Schemes served by modules on a higher floor, imported only when asked for.
_LAZY: dict[str, str] = {}


def register_store(scheme: str, factory: StoreFactory | str) -> None:
    """Register ``factory(url, clock=..., prefix=...)`` for ``scheme://`` URLs.

    ``factory`` may be a ``"module:function"`` string, imported on first use.
    """
    if isinstance(factory, str):
        _LAZY[scheme] = factory
    else:
        _FACTORIES[scheme] = factory


def open_store(spec: str, *, clock: Clock | None = None, prefix: str = DEFAULT_PREFIX) -> WindowStore:
    """Open a window store from a name (``memory``, ``fakeredis``) or URL."""
    scheme = spec.split("://", 1)[0] if "://" in spec else spec
    factory = _FACTORIES.get(scheme)
    if factory is None and scheme in _LAZY:
        module, _, attr = _LAZY[scheme].partition(":")
        with needs_extras():
            factory = _FACTORIES[scheme] = getattr(importlib.import_module(module), attr)
    if factory is None:
        known = ", ".join(sorted({*_FACTORIES, *_LAZY}))
        raise ConfigurationError(f"unknown store {redact_url(spec)!r} (known schemes: {known})")
    return factory(spec, clock=clock, prefix=prefix)


def _memory(spec: str, **kw: Any) -> WindowStore:
    return MemoryStore(**kw)


def _fakeredis(spec: str, **kw: Any) -> WindowStore:
    fakeredis = require("fakeredis")  # an embedded default (dedup[workbench]), loaded only when asked for
    return RedisStore(fakeredis.FakeRedis(), **kw)


def _redis(spec: str, **kw: Any) -> WindowStore:
    return RedisStore(spec, **kw)


register_store("memory", _memory)
register_store("fakeredis", _fakeredis)
register_store("redis", _redis)
register_store("rediss", _redis)
register_store("unix", _redis)
register_store("redis+cluster", _redis)
register_store("rediss+cluster", _redis)
register_store("dynamodb", "dedup.stores.dynamodb:from_url")

__all__ = [
    "Claim",
    "ClaimStatus",
    "MemoryStore",
    "RedisStore",
    "WindowStore",
    "open_store",
    "register_store",
]
