"""Key strategies as DuckDB SQL: the raw key of ``dedup.keys`` built inside the scan, where certain.

Each expression yields exactly what the Python code returns (the raw key
string of ``EnvelopeId().key_for(event)`` or of the vendor keys of ``auto``,
``genesys`` and ``nice``, the epoch ms of ``dedup.keys.epoch_ms(event["time"])``)
or NULL. NULL never means "no key": it means the row is not one of the plain
shapes the SQL knows exactly (an escaped string, a float, a timestamp that is
neither strict ISO-8601 nor an integer, a line DuckDB reads differently from
``json.loads``, a value the strategy refuses), and the row is handed to the
real Python code (:mod:`dedup.columnar.derive`). So the SQL is a fast path,
never a second definition of a key.

The vendor keys are built from :mod:`dedup.key_catalogue` (families, their
fields and order) for every family keyed by fields; a key that is a canonical
fingerprint (an uncatalogued topic, a family without identifying fields, no
field present, a source of neither vendor) is NULL: DuckDB has no BLAKE2b and
no RFC 8785 writer, so those rows are keyed in Python.

A fast path is only used while the ``dedup`` code it reproduces is the code it
was checked against (:data:`VALIDATED`, a hash of the source of the names in
:data:`SOURCES`; the tests comparing it with ``derive_key`` and ``epoch_ms`` on
samples, tricky values, hypothesis-made values and generated traces say when
to update it): a changed strategy or catalogue silently loses its fast path,
never its exactness. Strategies without one (``fingerprint``, ``business:...``,
``auto:nice=...``) are keyed in Python for every row, on every core.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from typing import Any

from dedup import key_catalogue, keys

#: The names each fast path reproduces (in ``dedup.keys``, or ``module.name`` in ``dedup.module``): hashed.
SOURCES: dict[str, tuple[str, ...]] = {
    "envelope-id": ("EnvelopeId",),
    "time": ("epoch_ms", "canonical.epoch_ms", "canonical._iso_ms", "canonical._SECONDS_BELOW"),
}
_VENDOR_SOURCES = (
    "GenesysKey", "NiceKey", "_family_key", "_text", "canonical.canonical_json", "canonical._is_plain",
    "canonical.epoch_ms", "canonical._iso_ms", "canonical._number_ms", "canonical._SECONDS_BELOW",
    "key_catalogue.Family", "key_catalogue.resolve", "key_catalogue.genesys_family",
    "key_catalogue.nice_family",
    "key_catalogue.GENESYS_FAMILIES", "key_catalogue.NICE_FAMILIES", "key_catalogue._GENESYS_BY_PREFIX",
    "key_catalogue.GENESYS_SOURCE_PREFIX", "key_catalogue.NICE_BRIDGE_SOURCE", "key_strategy",
)
SOURCES.update({
    "auto": ("AutoKey", "auto", *_VENDOR_SOURCES),
    "genesys": _VENDOR_SOURCES,
    "nice": _VENDOR_SOURCES,
})
#: Per fast path, the hash of its :data:`SOURCES` the SQL was checked against.
VALIDATED: dict[str, str] = {
    "envelope-id": "5b68e42cb380be365eb4b639d0838c988c7e3f93c5d9f0083c37a6f0ac1088f4",
    "time": "0eea91c51222ee504a509014cbe8bb9a734007222319078e2a6180156c2b577a",
    "auto": "48f230781d00ec2957344b7585e04898df3c4f7b1ca1be1f54589bff2313ec82",
    "genesys": "5d671d4d23f9054b13e9df493a4b87b4896f9a294a6a22747c616c929b781d16",
    "nice": "5d671d4d23f9054b13e9df493a4b87b4896f9a294a6a22747c616c929b781d16",
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
    # the millisecond (exact integer arithmetic, as (parsed - epoch) // 1 ms: shifted by 10**18 us so that
    # DuckDB's //, which truncates, floors for every year the ISO pattern admits; one cast per value).
    """CREATE OR REPLACE TEMP MACRO dd_epoch_us(v) AS epoch_us(TRY_CAST(v[2:-2] AS TIMESTAMPTZ))""",
    f"""CREATE OR REPLACE TEMP MACRO dd_epoch(v) AS
        CASE
          WHEN starts_with(v, '"') THEN CASE WHEN regexp_full_match(v[2:-2], '{_ISO}') THEN
            (dd_epoch_us(v) + 1000000000000000000) // 1000 - 1000000000000000 END
          WHEN regexp_full_match(v, '0|-?[1-9][0-9]{{0,17}}') THEN
            CASE WHEN abs(v::BIGINT) < 100000000000 THEN v::BIGINT * 1000 ELSE v::BIGINT END
        END""",
    # A line both parsers read alike: DuckDB also takes trailing commas and inf/nan, which json.loads refuses
    # (a conservative test: such text inside a string also sends the row to Python). Repeated names (DuckDB
    # reads the first, json.loads keeps the last) are tested by _unrepeated. One pattern per character that
    # may precede such a value: a pattern starting with a literal is searched for that byte first (fast).
    r"""CREATE OR REPLACE TEMP MACRO dd_readable(line) AS
        NOT regexp_matches(line, ',\s*(?:[\]}]|[-+]?(?i:inf|nan))')
        AND NOT regexp_matches(line, ':\s*[-+]?(?i:inf|nan)')
        AND NOT regexp_matches(line, '\[\s*[-+]?(?i:inf|nan)')""",
    # dict.get(...) is None or == "": a missing name, a JSON null, an empty string.
    """CREATE OR REPLACE TEMP MACRO dd_absent(v) AS coalesce(v IN ('null', '""'), true)""",
    # dedup.keys._text of a string (without escapes), an integer or a boolean; NULL for anything else.
    """CREATE OR REPLACE TEMP MACRO dd_text(v) AS
        CASE WHEN starts_with(v, '"') THEN dd_str(v)
             WHEN v = 'true' OR v = 'false' OR regexp_full_match(v, '0|-?[1-9][0-9]{0,29}') THEN v END""",
    # resolve(body, ("list[]", name)) as key text: the list's objects' names joined by ',' ('' when none);
    # certain when each is a non-empty string without escapes and no object repeats the name (counted in
    # the list's text: a nested one only makes the test conservative).
    r"""CREATE OR REPLACE TEMP MACRO dd_list_text(items, found, name) AS
        CASE WHEN items IS NULL OR NOT starts_with(items, '[') THEN ''
             WHEN contains(items, '\') OR (strlen(items) - strlen(replace(items, '"' || name || '":', '')))
                  <> len(found) * strlen('"' || name || '":') THEN NULL
             WHEN len(found) = 0 THEN ''
             WHEN regexp_full_match(array_to_string(found, ','), '"[^"\\]+"(,"[^"\\]+")*')
               THEN replace(array_to_string(found, ','), '"', '') END""",
    # A NICE event's type: the first of detail.eventType, detail.Type, the body's Type, detail-type that is
    # present, if it is a plain string (a truthy number or list, or none present at all: Python).
    """CREATE OR REPLACE TEMP MACRO dd_nice_kind(a, b, c, d) AS
        CASE WHEN NOT dd_absent(a) THEN dd_str(a) WHEN NOT dd_absent(b) THEN dd_str(b)
             WHEN NOT dd_absent(c) THEN dd_str(c) WHEN NOT dd_absent(d) THEN dd_str(d) END""",
]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_path(root: str, segments: tuple[str, ...]) -> str:
    return root + "".join(f'."{seg}"' for seg in segments)


def _paths_list(paths: list[str]) -> str:
    return "[" + ", ".join(_literal(p) for p in paths) + "]"


_GENESYS_BODY = "$.detail.eventBody"


def _family_sql(head: str, family: key_catalogue.Family, value: Any) -> str:
    """``dedup.keys._family_key`` of a known family with fields; NULL where it would fingerprint the body.

    ``value(path, segments)`` is the SQL of a field's JSON text, or ``("list", text_sql)`` for a
    ``list[].name`` path whose key text ``text_sql`` gives ('' when none).
    """
    parts: dict[str, list[tuple[str, str]]] = {"id": [], "item": [], "time": []}
    for path, segments, kind, _ in family.paths:
        v = value(path, segments)
        if isinstance(v, tuple):  # a list path: its text is '' when nothing is found
            text, label = v[1], _literal("|" + path + "=")
            parts[kind].append((f"{text} <> ''", f"CASE WHEN {text} = '' THEN '' ELSE {label} || {text} END"))
            continue
        render = f"dd_epoch({v})::VARCHAR" if kind == "time" else f"dd_text({v})"
        label = _literal("|" + path + "=")
        text = f"CASE WHEN dd_absent({v}) THEN '' ELSE {label} || {render} END"
        parts[kind].append((f"NOT dd_absent({v})", text))

    def joined(*kinds: str) -> str:
        return " || ".join([head, *(text for kind in kinds for _, text in parts[kind])])

    def present(*kinds: str) -> str:
        return " OR ".join(test for kind in kinds for test, _ in parts[kind]) or "false"

    if family.items_over_times:
        return (f"CASE WHEN {present('item')} THEN {joined('id', 'item')} "
                f"WHEN {present('time')} THEN {joined('id', 'time')} END")
    return f"CASE WHEN {present('item', 'time')} THEN {joined('id', 'item', 'time')} END"


#: The names read at the root of every envelope keyed by a vendor (``time``: the arrival without truth).
_ROOT_NAMES = ["source", "detail", "time"]


#: Up to this many names read in an object, each is tested alone (measured: a filter per name costs about
#: a third of a sort of the object's names).
_NAMES_FILTERED = 3


def _unrepeated(keys: str, objects: dict[str, list[str]]) -> str:
    """SQL true when no object repeats a name read in it (DuckDB reads the first, json.loads the last).

    ``objects`` maps the JSON path of each object on the way to the fields to the names read there;
    ``keys`` is the column of ``json_keys(line, <those paths>)``, in that order. A missing object repeats
    nothing. Other names may repeat (they change no key), except in an object read for more than
    :data:`_NAMES_FILTERED` names: there no name may repeat (a stricter test, cheaper than a filter per name).
    """
    tests = []
    for i, names in enumerate(objects.values(), 1):
        names = list(dict.fromkeys(names))
        if len(names) > _NAMES_FILTERED:
            tests.append(f"coalesce(len(list_distinct({keys}[{i}])) = len({keys}[{i}]), true)")
        else:
            tests += [f"coalesce(len(list_filter({keys}[{i}], lambda n: n = {_literal(name)})) <= 1, true)"
                      for name in names]
    return " AND ".join(tests) or "true"


def _genesys_sql() -> tuple[list[str], str]:
    """Layers ending in ``dd_gkeys``: ``GenesysKey`` of a Genesys event as ``dd_genesys`` (the caller tests
    its source), the names of the objects on the way to its fields where there is a key, and the SQL
    testing that none of those objects repeats a name read in it.

    The family comes from the topic (``genesys_family``); the line is then read again for that family's
    fields only (each extracted path costs more than a parse).
    """
    topic = _extracted("g_topic", "$.detail.topicName")
    family_of = []  # dedup.key_catalogue.genesys_family, tried in its order
    for prefix, families in key_catalogue._GENESYS_BY_PREFIX.items():
        for family in families:
            suffix = family.match[1]
            test = (f"contains(substr(dd_topic, {len(prefix) + 1}), {_literal(suffix[1:])})"
                    if suffix.startswith("*") else f"ends_with(dd_topic, {_literal(suffix)})")
            family_of.append(f"WHEN starts_with(dd_topic, {_literal(prefix)}) AND {test} "
                             f"THEN {key_catalogue.GENESYS_FAMILIES.index(family)}")
    reads, keys, objects, tests, width = [], [], [], [], 0
    lists: list[tuple[str, str]] = []  # a list path's values, then its text: columns, each computed once
    for i, family in enumerate(key_catalogue.GENESYS_FAMILIES):
        if family.fingerprint_only:
            continue
        paths: list[str] = []
        on_the_way = {"$": list(_ROOT_NAMES), "$.detail": ["topicName", "eventBody"], _GENESYS_BODY: []}
        for path, segments, _, _ in family.paths:
            segments = segments or (path,)
            for n in range(len(segments)):
                if any(seg.endswith("]") for seg in segments[:n]):
                    break  # a list's objects: dd_list_text counts their names
                on_the_way.setdefault(_json_path(_GENESYS_BODY, segments[:n]), []).append(
                    segments[n].removesuffix("[]"))
        objects.append(f"WHEN {i} THEN try(json_keys(line, {_paths_list(list(on_the_way))}))")
        tests.append(f"WHEN {i} THEN {_unrepeated('dd_gkeys', on_the_way)}")

        def value(path: str, segments: tuple[str, ...] | None, paths: list[str] = paths, i: int = i) -> Any:
            segments = segments or (path,)
            if any(seg.endswith("[]") for seg in segments):
                if len(segments) != 2 or not segments[0].endswith("[]"):
                    raise ValueError(f"{path}: only 'list[].name' paths have an SQL form")
                paths.append(_json_path(_GENESYS_BODY, (segments[0][:-2],)))
                items, n = f"dd_g{len(paths)}", len(lists) + 1
                found = f"json_extract({items}, {_literal('$[*].' + segments[1])})::VARCHAR[]"
                lists.append((f"CASE WHEN dd_gfamily = {i} THEN {found} END AS dd_found{n}",
                              f"dd_list_text({items}, dd_found{n}, {_literal(segments[1])}) AS dd_list{n}"))
                return ("list", f"dd_list{n}")
            paths.append(_json_path(_GENESYS_BODY, segments))
            return f"dd_g{len(paths)}"

        key = _family_sql("'genesys:' || dd_topic", family, value)
        reads.append(f"WHEN {i} THEN json_extract(line, {_paths_list(paths)})::VARCHAR[]")
        keys.append(f"WHEN {i} THEN {key}")
        width = max(width, len(paths))
    # The fields as columns: a macro repeats its argument, so each would be taken from the list many times.
    return [f"CASE WHEN dd_str({topic}) <> '' THEN dd_str({topic}) END AS dd_topic",
            f"CASE {' '.join(family_of)} END AS dd_gfamily",
            f"CASE WHEN dd_genesys_source THEN CASE dd_gfamily {' '.join(reads)} END END AS dd_g",
            ", ".join(f"dd_g[{n}] AS dd_g{n}" for n in range(1, width + 1)),
            *(", ".join(layer) for layer in zip(*lists, strict=True)),
            f"CASE dd_gfamily {' '.join(keys)} END AS dd_genesys",
            f"CASE WHEN dd_genesys IS NOT NULL THEN CASE dd_gfamily {' '.join(objects)} END END AS dd_gkeys",
            ], f"CASE dd_gfamily {' '.join(tests)} END"


def _nice_names() -> list[str]:
    names = dict.fromkeys(["eventType", "Type"])
    for family in key_catalogue.NICE_FAMILIES:
        for path, segments, _, _ in family.paths:
            if segments is not None:
                raise ValueError(f"{path}: only top-level NICE names have an SQL form")
            names[path] = None
        names.update(dict.fromkeys(family.match))
    return list(names)


def _nice_sql() -> tuple[list[str], str]:
    """Layers ending in ``dd_nkeys``: ``NiceKey`` as ``dd_nice``, the names of the root, ``detail`` and
    ``detail.payload`` where there is a key, and the SQL testing that none repeats a name read in it. Its body
    is ``detail.payload`` when that is an object, else ``detail``; a name missing (or null) in a wrapped
    payload is looked up in ``detail``. ``dd_n`` holds the body's names, then the names where a missing one
    is looked up next (``detail`` again when unwrapped)."""
    payload = _extracted("n_payload", "$.detail.payload")
    names = _nice_names()
    index = {name: i + 1 for i, name in enumerate(names)}
    inner = [_json_path("$.detail.payload", (name,)) for name in names]
    outer = [_json_path("$.detail", (name,)) for name in names]

    def body(name: str) -> str:
        return f"dd_n{index[name]}"

    def value(name: str, _segments: object = None) -> str:
        return f"dd_nv{index[name]}"

    fields = {index[path] for family in key_catalogue.NICE_FAMILIES for path, _, _, _ in family.paths}
    family_of = []  # dedup.key_catalogue.nice_family: the first family any of whose names is present
    for i, family in enumerate(key_catalogue.NICE_FAMILIES):
        present = " OR ".join(f"NOT dd_absent({body(name)})" for name in family.match)
        family_of.append(f"WHEN {present} THEN {i}")
    detail_type = _extracted("n_detail_type", '$."detail-type"')
    kind = (f"dd_nice_kind(dd_n{len(names) + index['eventType']}, dd_n{len(names) + index['Type']}, "
            f"{body('Type')}, {detail_type})")
    head = "'nice:' || dd_kind"
    objects = {"$": [*_ROOT_NAMES, "detail-type"], "$.detail": ["payload", *names], "$.detail.payload": names}
    keys = " ".join(f"WHEN {i} THEN {_family_sql(head, f, value)}"
                    for i, f in enumerate(key_catalogue.NICE_FAMILIES) if not f.fingerprint_only)
    # Columns, each computed once (a macro repeats its argument).
    return [f"CASE WHEN NOT dd_nice_source THEN NULL WHEN starts_with({payload}, '{{') "
            f"THEN json_extract(line, {_paths_list(inner + outer)})::VARCHAR[] "
            f"ELSE json_extract(line, {_paths_list(outer + outer)})::VARCHAR[] END AS dd_n",
            ", ".join(f"dd_n[{i}] AS dd_n{i}" for i in range(1, 2 * len(names) + 1)),
            ", ".join(f"coalesce(nullif(dd_n{i}, 'null'), dd_n{len(names) + i}) AS dd_nv{i}"
                      for i in sorted(fields)),
            f"CASE {' '.join(family_of)} END AS dd_nfamily, {kind} AS dd_kind",
            f"CASE dd_nfamily {keys} END AS dd_nice",
            f"CASE WHEN dd_nice IS NOT NULL THEN try(json_keys(line, {_paths_list(list(objects))})) END "
            "AS dd_nkeys"], _unrepeated("dd_nkeys", objects)


def _extracted(name: str, path: str) -> str:
    """The column ``name`` holding the JSON text at ``path`` (added to :data:`PATHS`)."""
    PATHS[name] = path
    return name


def _vendor_sql(vendors: tuple[str, ...]) -> list[str]:
    """The vendor keys of ``auto`` (default sources), ``genesys`` or ``nice``, where certain: every content
    fingerprint (an unknown family, no field present, another source) is NULL, keyed in Python."""
    source = _extracted("source", "$.source")
    genesys = f"coalesce(starts_with(dd_source, {_literal(key_catalogue.GENESYS_SOURCE_PREFIX)}), false)"
    nice = "true"  # NiceKey alone does not look at the source; auto sends it the bridge's events only
    if "genesys" in vendors:
        nice = f"coalesce(dd_source = {_literal(key_catalogue.NICE_BRIDGE_SOURCE)}, false)"
    layers = [f"dd_str({source}) AS dd_source",
              f"{genesys if 'genesys' in vendors else 'false'} AS dd_genesys_source, "
              f"{nice if 'nice' in vendors else 'false'} AS dd_nice_source"]
    choice = []
    # A key is checked (a readable line, no name read repeated: a second read) only where there is one.
    if "genesys" in vendors:
        genesys_layers, unrepeated = _genesys_sql()
        layers += genesys_layers
        choice.append(f"WHEN dd_genesys_source THEN CASE WHEN dd_genesys IS NULL THEN NULL "
                      f"WHEN dd_readable(line) AND {unrepeated} THEN dd_genesys END")
    if "nice" in vendors:
        nice_layers, unrepeated = _nice_sql()
        layers += nice_layers
        choice.append(f"WHEN dd_nice_source THEN CASE WHEN dd_nice IS NULL THEN NULL "
                      f"WHEN dd_readable(line) AND {unrepeated} THEN dd_nice END")
    layers.append(f"CASE {' '.join(choice)} END AS k")
    return layers


#: Strategy specs with an SQL fast path: the select lists (innermost first) ending in column ``k``.
FAST_SPECS = {
    # Only the names read at the root must not repeat (as in _unrepeated).
    "envelope-id": lambda: ["try(json_keys(line)) AS dd_root",
                            "CASE WHEN dd_str(id) <> '' AND dd_readable(line) "
                            "AND len(list_filter(dd_root, lambda n: n = 'id')) = 1 "
                            "AND len(list_filter(dd_root, lambda n: n = 'time')) <= 1 "
                            "THEN 'id:' || dd_str(id) END AS k"],
    "auto": lambda: _vendor_sql(("genesys", "nice")),
    "genesys": lambda: _vendor_sql(("genesys",)),
    "nice": lambda: _vendor_sql(("nice",)),
}


def source_sha256(path: str) -> str:
    """SHA-256 of the ``dedup.keys`` code a fast path reproduces ('' when a name is gone)."""
    return names_sha256(SOURCES[path])


def names_sha256(names: tuple[str, ...]) -> str:
    """SHA-256 of the source of ``names`` (as in :data:`SOURCES`; '' when a name is gone)."""
    parts = []
    for name in names:
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
