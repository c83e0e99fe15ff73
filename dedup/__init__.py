"""dedup: deduplicate Amazon EventBridge events consumed through SQS or Lambda.

The core (this package's top level) needs only the standard library, redis and
jmespath, so a Lambda deployment stays small; boto3, pandas and matplotlib are
imported only by ``dedup.aws``, ``dedup.traces``, ``dedup.analysis`` and
``dedup.plots``.
"""

from dedup.clock import Clock, ManualClock, SystemClock
from dedup.errors import (
    BadMessageError,
    ConfigurationError,
    DedupError,
    LeaseLostError,
    MissingKeyError,
    PayloadMismatchError,
    StoreUnavailableError,
)
from dedup.keys import (
    AutoKey,
    BusinessKey,
    ContentFingerprint,
    EnvelopeId,
    FirstOf,
    GenesysKey,
    KeyExplanation,
    KeyStrategy,
    NiceKey,
    NoKey,
    auto,
    explain_key,
    first_of,
    key_strategy,
)
from dedup.service import Deduplicator, Outcome, Result, Stats
from dedup.stores import Claim, ClaimStatus, MemoryStore, RedisStore, WindowStore, open_store

__version__ = "0.1.0"

__all__ = [
    "AutoKey",
    "BadMessageError",
    "BusinessKey",
    "Claim",
    "ClaimStatus",
    "Clock",
    "ConfigurationError",
    "ContentFingerprint",
    "DedupError",
    "Deduplicator",
    "EnvelopeId",
    "FirstOf",
    "GenesysKey",
    "KeyExplanation",
    "KeyStrategy",
    "LeaseLostError",
    "ManualClock",
    "MemoryStore",
    "MissingKeyError",
    "NiceKey",
    "NoKey",
    "Outcome",
    "PayloadMismatchError",
    "RedisStore",
    "Result",
    "Stats",
    "StoreUnavailableError",
    "SystemClock",
    "WindowStore",
    "auto",
    "explain_key",
    "first_of",
    "key_strategy",
    "open_store",
]
