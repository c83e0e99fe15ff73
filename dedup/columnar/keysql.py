"""Key strategies as DuckDB SQL: the raw key of ``dedup.keys`` built inside the scan, where certain.

Each expression yields exactly what the Python code returns (the raw key
string of ``EnvelopeId().key_for(event)``, the epoch ms of
``dedup.keys.epoch_ms(event["time"])``) or NULL. NULL never means "no key": it
means the row is not one of the plain shapes the SQL knows exactly (an escaped
string, a timestamp that is neither strict ISO-8601 nor an integer, a value
the strategy refuses), and the row is handed to the real Python code
(:mod:`dedup.columnar.derive`). So the SQL is a fast path, never a second
definition of a key.

A fast path is only used while the ``dedup.keys`` code it reproduces is the
code it was checked against (:data:`VALIDATED`, a hash of the source of the
names in :data:`SOURCES`; the tests comparing it with ``derive_key`` and
``epoch_ms`` on samples, tricky values and generated traces say when to update
it): a changed strategy silently loses its fast path, never its exactness.
Strategies without one (the vendor keys of ``auto``, ``fingerprint``,
``business:...``) are keyed in Python for every row, on every core.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re

from dedup import keys

#: The names each fast path reproduces (in ``dedup.keys``, or ``module.name`` in ``dedup.module``): hashed.
SOURCES: dict[str, tuple[str, ...]] = {
    "envelope-id": ("EnvelopeId",),
    "time": ("epoch_ms", "canonical.epoch_ms", "canonical._iso_ms", "canonical._SECONDS_BELOW"),
}
#: Per fast path, the hash of its :data:`SOURCES` the SQL was checked against.
VALIDATED: dict[str, str] = {
    "envelope-id": "5b68e42cb380be365eb4b639d0838c988c7e3f93c5d9f0083c37a6f0ac1088f4",
    "time": "0eea91c51222ee504a509014cbe8bb9a734007222319078e2a6180156c2b577a",
}

#: JSON paths extracted once per row (one parse); the SQL refers to them by name.
PATHS: dict[str, str] = {"id": "$.id", "time": "$.time"}

# Strict ISO-8601 that datetime.fromisoformat and DuckDB read alike (anything else goes to Python).
_ISO = (r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
        r"(\.[0-9]{3}|\.[0-9]{6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$")

#: Macros over raw JSON text (as json_extract returns it); NULL propagates "not certain".
MACROS = [
    # A JSON string without escapes, unquoted.
    r"""CREATE OR REPLACE TEMP MACRO dd_str(v) AS
        CASE WHEN starts_with(v, '"') AND NOT contains(v, '\') THEN v[2:-2] END""",
    # dedup.keys.epoch_ms: a JSON integer (seconds below 1e11, else ms), or strict ISO text floored to
    # the millisecond (exact integer arithmetic, as (parsed - epoch) // 1 ms).
    """CREATE OR REPLACE TEMP MACRO dd_epoch_us(v) AS epoch_us(TRY_CAST(v[2:-2] AS TIMESTAMPTZ))""",
    f"""CREATE OR REPLACE TEMP MACRO dd_epoch(v) AS
        CASE
          WHEN starts_with(v, '"') THEN CASE WHEN regexp_full_match(v[2:-2], '{_ISO}') THEN
            (dd_epoch_us(v) - ((dd_epoch_us(v) % 1000) + 1000) % 1000) // 1000 END
          WHEN regexp_full_match(v, '0|-?[1-9][0-9]{{0,17}}') THEN
            CASE WHEN abs(v::BIGINT) < 100000000000 THEN v::BIGINT * 1000 ELSE v::BIGINT END
        END""",
]

#: Strategy specs with an SQL fast path: the select lists (innermost first) ending in column ``k``.
FAST_SPECS = {
    "envelope-id": lambda: ["CASE WHEN dd_str(id) <> '' THEN 'id:' || dd_str(id) END AS k"],
}


def source_sha256(path: str) -> str:
    """SHA-256 of the ``dedup.keys`` code a fast path reproduces ('' when a name is gone)."""
    parts = []
    for name in SOURCES[path]:
        head, _, rest = name.partition(".")
        # "epoch_ms" is dedup.keys.epoch_ms; "canonical.epoch_ms" is dedup.canonical.epoch_ms.
        value: object = importlib.import_module(f"dedup.{head}") if rest else keys
        for part in (rest or head).split("."):
            value = getattr(value, part, None)
        if value is None:
            return ""
        parts.append(inspect.getsource(value) if callable(value) else repr(value))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def validated(path: str) -> bool:
    """Whether the fast path ``path`` (a spec of :data:`FAST_SPECS`, or ``time``) may be used."""
    return path in VALIDATED and source_sha256(path) == VALIDATED[path]


def keys_source_sha256() -> str:
    """SHA-256 of the whole ``dedup.keys`` source in use (part of a key cache's identity)."""
    return hashlib.sha256(inspect.getsource(keys).encode()).hexdigest()


def key_layers(spec: object) -> list[str] | None:
    """The fast path of a strategy spec (select lists ending in ``k``), or None: every row to Python."""
    if not isinstance(spec, str) or spec.strip() not in FAST_SPECS or not validated(spec.strip()):
        return None
    return FAST_SPECS[spec.strip()]()


def time_sql() -> str | None:
    """The envelope ``time`` as epoch ms where certain, or None: every row's time from Python."""
    return "dd_epoch(time)" if validated("time") else None


def used_paths(layers: list[str], *extra: str) -> dict[str, str]:
    """The :data:`PATHS` that ``layers`` (and ``extra`` expressions) refer to: each path costs a lookup."""
    text = " ".join([*layers, *extra])
    return {name: path for name, path in PATHS.items() if re.search(rf"\b{name}\b", text)}
