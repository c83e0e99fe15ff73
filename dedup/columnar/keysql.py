"""Key strategies as DuckDB SQL: the raw key of ``dedup.keys`` built inside the scan, where certain.

Each expression yields exactly the raw key string the Python strategy returns
(``GenesysKey().key_for(event)``, ...) or NULL. NULL never means "no key": it
means the row is not one of the plain shapes the SQL knows exactly (a float or
boolean where an id is expected, an escaped string, a timestamp that is not
strict ISO-8601 or an integer, a strategy that raised ``NoKey``), and the row
is handed to the real Python strategy (:mod:`dedup.columnar.derive`). So the
SQL is a fast path, never a second definition of a key.

The fast path of a strategy is only used while the ``dedup.keys`` code it
reproduces is the code it was checked against (:data:`VALIDATED`, a hash of
the source of the classes and helpers each spec runs; the tests comparing it
with ``derive_key`` on samples and generated traces say when to update it): a
changed strategy silently loses its fast path, never its exactness. Only the
registry's default strategies have one (:data:`FAST_SPECS`).
"""

from __future__ import annotations

import hashlib
import inspect
import re

from dedup import keys
from dedup.keys import GENESYS_SOURCE_PREFIX, NICE_SOURCE_MARKERS

#: The ``dedup.keys`` names each fast path reproduces (their source is hashed).
SOURCES: dict[str, tuple[str, ...]] = {
    "envelope-id": ("EnvelopeId",),
    "genesys": ("GenesysKey", "epoch_ms", "_scalar", "_utterance_ids", "GENESYS_SOURCE_PREFIX"),
    "nice": ("NiceKey", "epoch_ms", "_scalar"),
    "auto": ("AutoKey", "auto", "GenesysKey", "NiceKey", "epoch_ms", "_scalar", "_utterance_ids",
             "GENESYS_SOURCE_PREFIX", "NICE_SOURCE_MARKERS"),
}
#: Per spec, the hash of :data:`SOURCES` the SQL was checked against.
VALIDATED: dict[str, str] = {
    "envelope-id": "a1e2d0d3064836498c575f134a9bf5af3a91e6cc13b1431536880532be0476c0",
    "genesys": "572c0dcfe41ee683e0148397bf27558b696081dd50a7d936395017842f6e27b2",
    "nice": "5e3691b08117c3091699d7da7ca6ddfda86d49f90e683c5186cbe6cf72e945c0",
    "auto": "43cc6a7f93ec9052a11d2ed09929b1f774652234abcd49941a3b4a34a234f720",
}

#: JSON paths extracted once per row (one parse); the SQL refers to them by name.
PATHS: dict[str, str] = {
    "source": "$.source",
    "id": "$.id",
    "detail_type": '$."detail-type"',
    "time": "$.time",
    "topic": "$.detail.topicName",
    "b_id": "$.detail.eventBody.id",
    "b_participant": "$.detail.eventBody.participantId",
    "b_session": "$.detail.eventBody.sessionId",
    "b_communication": "$.detail.eventBody.communicationId",
    "b_utterance": "$.detail.eventBody.utteranceId",
    "b_transcripts": "$.detail.eventBody.transcripts",
    "b_event_time": "$.detail.eventBody.eventTime",
    "b_modified": "$.detail.eventBody.modifiedDate",
    "event_type": "$.detail.eventType",
    "p_interaction": "$.detail.payload.interactionId",
    "p_contact": "$.detail.payload.ContactID",
    "p_master": "$.detail.payload.MasterID",
    "event_id": "$.detail.eventId",
    "created_at": "$.detail.createdAt",
    "p_timestamp": "$.detail.payload.timestamp",
}

# Strict ISO-8601 that datetime.fromisoformat and DuckDB read alike (anything else goes to Python).
_ISO = (r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
        r"(\.[0-9]{3}|\.[0-9]{6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$")

#: Macros over raw JSON text (as json_extract returns it); NULL propagates "not certain".
MACROS = [
    # A JSON string without escapes, unquoted.
    r"""CREATE OR REPLACE TEMP MACRO dd_str(v) AS
        CASE WHEN starts_with(v, '"') AND NOT contains(v, '\') THEN v[2:-2] END""",
    # A JSON integer, as Python's str(int) writes it.
    r"""CREATE OR REPLACE TEMP MACRO dd_int(v) AS
        CASE WHEN regexp_full_match(v, '0|-?[1-9][0-9]*') THEN v END""",
    # dedup.keys._scalar: a string or a number (integers only here).
    """CREATE OR REPLACE TEMP MACRO dd_scalar(v) AS
        CASE WHEN starts_with(v, '"') THEN dd_str(v) ELSE dd_int(v) END""",
    # Python's `value in (None, "")`: missing, JSON null or the empty string.
    """CREATE OR REPLACE TEMP MACRO dd_absent(v) AS (v IS NULL OR v = 'null' OR v = '""')""",
    # Python's `value is not None`.
    "CREATE OR REPLACE TEMP MACRO dd_present(v) AS (v IS NOT NULL AND v <> 'null')",
    # `|name=value` when present, '' when absent.
    "CREATE OR REPLACE TEMP MACRO dd_part(name, v) AS "
    "CASE WHEN dd_absent(v) THEN '' ELSE '|' || name || '=' || dd_scalar(v) END",
    # dedup.keys.epoch_ms as text: integers (seconds below 1e11, else ms) and strict ISO text, the
    # latter with the same float steps as int(datetime.timestamp() * 1000).
    f"""CREATE OR REPLACE TEMP MACRO dd_epoch(v) AS
        CASE
          WHEN starts_with(v, '"') THEN CASE WHEN regexp_full_match(v[2:-2], '{_ISO}') THEN
            trunc(epoch_us(TRY_CAST(v[2:-2] AS TIMESTAMPTZ))::DOUBLE / 1000000.0 * 1000.0)::BIGINT::VARCHAR
          END
          WHEN dd_int(v) IS NOT NULL AND length(v) <= 18 THEN
            CASE WHEN abs(v::BIGINT) < 100000000000 THEN (v::BIGINT * 1000)::VARCHAR ELSE v END
        END""",
]


def source_sha256(spec: str) -> str:
    """SHA-256 of the ``dedup.keys`` code a fast path reproduces ('' when a name is gone)."""
    parts = []
    for name in SOURCES[spec]:
        value = getattr(keys, name, None)
        if value is None:
            return ""
        parts.append(inspect.getsource(value) if callable(value) else repr(value))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def keys_source_sha256() -> str:
    """SHA-256 of the whole ``dedup.keys`` source in use (part of a key cache's identity)."""
    return hashlib.sha256(inspect.getsource(keys).encode()).hexdigest()


def _genesys_layers() -> list[str]:
    """Select lists, innermost first, that end with column ``k_genesys``."""
    # The utteranceIds of the transcripts that are objects and have one (json_extract skips the rest,
    # as GenesysKey does); each '' when None or "", chr(0) when not a plain string or integer.
    transcripts = ("list_transform(json_extract(b_transcripts, '$[*].utteranceId')::VARCHAR[], lambda u: "
                   "CASE WHEN dd_absent(u) THEN '' ELSE coalesce(dd_scalar(u), chr(0)) END)")
    body = "CASE WHEN dd_absent(b_utterance) THEN '' ELSE coalesce(dd_scalar(b_utterance), chr(0)) END"
    return [
        # Lists only on rows that carry utterances: they are costly.
        "CASE WHEN b_transcripts IS NULL AND b_utterance IS NULL THEN []::VARCHAR[] "
        f"WHEN starts_with(b_transcripts, '[') THEN list_filter(list_prepend({body}, {transcripts}), "
        f"lambda u: u <> '') ELSE list_filter([{body}], lambda u: u <> '') END AS g_ids, "
        "CASE WHEN dd_present(b_event_time) THEN b_event_time "
        "WHEN dd_present(b_modified) THEN b_modified END AS g_stamp",
        # utterance ids joined by ',' ('' none, NULL when one is not plain)
        "CASE WHEN len(g_ids) = 0 THEN '' WHEN list_contains(g_ids, chr(0)) THEN NULL "
        "ELSE array_to_string(g_ids, ',') END AS g_utts",
        f"CASE WHEN starts_with(dd_str(source), '{GENESYS_SOURCE_PREFIX}') AND dd_str(topic) <> '' THEN "
        "'genesys:' || dd_str(topic) || dd_part('id', b_id) || dd_part('participantId', b_participant) "
        "|| dd_part('sessionId', b_session) || dd_part('communicationId', b_communication) "
        "|| CASE WHEN g_utts <> '' THEN '|utt=' || g_utts ELSE g_utts END "
        "|| CASE WHEN g_stamp IS NOT NULL THEN '|t=' || dd_epoch(g_stamp) "
        "WHEN g_utts = '' AND dd_absent(b_id) THEN NULL ELSE '' END END AS k_genesys",
    ]


def _nice_layers() -> list[str]:
    """Select lists, innermost first, that end with column ``k_nice``."""
    return [
        "dd_part('interactionId', p_interaction) AS n_i, dd_part('ContactID', p_contact) AS n_c, "
        "dd_part('MasterID', p_master) AS n_m, "
        "CASE WHEN created_at IS NOT NULL THEN created_at ELSE p_timestamp END AS n_stamp",
        # Each id part is '|name=value', '' when absent, NULL when not plain (then the key is NULL).
        "CASE WHEN n_i || n_c || n_m <> '' THEN 'nice:' "
        "|| CASE WHEN event_type IS NOT NULL THEN dd_str(event_type) "
        "WHEN detail_type IS NULL THEN '' ELSE dd_str(detail_type) END "
        "|| n_i || n_c || n_m "
        "|| CASE WHEN NOT dd_absent(event_id) THEN '|eid=' || dd_scalar(event_id) "
        "WHEN dd_present(n_stamp) THEN '|t=' || dd_epoch(n_stamp) END END AS k_nice",
    ]


def _auto_layers() -> list[str]:
    """``AutoKey``: Genesys or NICE by source (fingerprints, the fallback, are keyed in Python)."""
    markers = " OR ".join(f"contains(lower(dd_str(source)), '{m}')" for m in NICE_SOURCE_MARKERS)
    genesys, nice = _genesys_layers(), _nice_layers()
    return [
        f"{genesys[0]}, {nice[0]}",
        genesys[1],
        f"{genesys[2]}, {nice[1]}",
        f"CASE WHEN starts_with(dd_str(source), '{GENESYS_SOURCE_PREFIX}') THEN k_genesys "
        f"WHEN regexp_full_match(dd_str(source), '[\\x20-\\x7e]*') AND ({markers}) THEN k_nice END AS k",
    ]


def _rename(layers: list[str], column: str) -> list[str]:
    return [*layers, f"{column} AS k"]


#: Strategy specs with an SQL fast path: the select lists (innermost first) ending in column ``k``.
FAST_SPECS = {
    "auto": _auto_layers,
    "genesys": lambda: _rename(_genesys_layers(), "k_genesys"),
    "nice": lambda: _rename(_nice_layers(), "k_nice"),
    "envelope-id": lambda: ["CASE WHEN dd_str(id) <> '' THEN 'id:' || dd_str(id) END AS k"],
}


def key_layers(spec: object) -> list[str] | None:
    """The fast path of a strategy spec (select lists ending in ``k``), or None: every row to Python."""
    if not isinstance(spec, str) or spec.strip() not in FAST_SPECS:
        return None
    if source_sha256(spec.strip()) != VALIDATED.get(spec.strip()):
        return None
    return FAST_SPECS[spec.strip()]()


def used_paths(layers: list[str], *extra: str) -> dict[str, str]:
    """The :data:`PATHS` that ``layers`` (and ``extra`` expressions) refer to: each path costs a lookup."""
    text = " ".join([*layers, *extra])
    return {name: path for name, path in PATHS.items() if re.search(rf"\b{name}\b", text)}
