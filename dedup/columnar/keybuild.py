"""Vendor and envelope-id keys built by a compiled loop over a chunk's lines, where certain.

The DuckDB fast path (:mod:`dedup.columnar.keysql`) parses a Genesys line three
times (root paths, the family's fields, the names for the repeated-name guard)
and scans it with three regular expressions: about 25 us of CPU a row. Here one
compiled pass per line does all of it, on the chunk's Arrow string buffers
(offsets + UTF-8 bytes, no Python string per row):

* it tokenizes the line as strict JSON, exactly as ``json.loads`` accepts it
  (whitespace, string escapes, number grammar, ``NaN`` / ``Infinity``), into a
  flat list of tokens (kind, text range, member name, next sibling);
* it looks up the fields :mod:`dedup.key_catalogue` names for the strategy
  (families and paths are data arrays generated from the catalogue, as
  :mod:`dedup.columnar.keysql` generates SQL), refusing an object on the way that
  repeats a name it reads (``json.loads`` keeps the last) or has an escaped name;
* it writes the raw key bytes as ``dedup.keys._family_key`` does (``_text`` of
  plain strings, integers and booleans; ``epoch_ms`` of integers and strict
  ISO-8601 text), and the envelope ``time`` as epoch ms;
* where the key is a fingerprint (a family without fields or none present, an
  uncatalogued topic, ``auto``'s content key of another source), it writes the
  body's canonical JSON (RFC 8785: members sorted, no whitespace; strings without
  escapes, integers, and floats whose text is already their shortest form are
  written as they stand), whose BLAKE2b then stands in the key (:func:`_digests`).

A row it is not certain of (an escaped string or a float it would have to
render, a time that is not an integer or strict ISO-8601, a name repeated or
escaped on the way, a line ``json.loads`` might read differently, no line at
all) is marked so, and keyed by
the real Python strategy (:func:`dedup.columnar.derive.python_keys`): exactness
never depends on this module. Like the SQL, the builder is used only while the
``dedup`` code it reproduces hashes to what it was checked against (:data:`VALIDATED`).
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numba import njit

from dedup import key_catalogue
from dedup.columnar.keysql import SOURCES as SQL_SOURCES
from dedup.columnar.keysql import names_sha256

#: The names each built strategy reproduces (hashed as :data:`dedup.columnar.keysql.SOURCES`): the
#: strategy's own, ``epoch_ms`` of the envelope time, and the body fingerprints' canonical JSON and digest.
_FINGERPRINT_SOURCES = ("ContentFingerprint", "_fingerprinted", "canonical.digest", "canonical.digests",
                        "canonical._plain", "canonical._encode", "canonical._encode_string",
                        "canonical._INT_EXACT")
SOURCES: dict[str, tuple[str, ...]] = {
    spec: (*SQL_SOURCES[spec], *SQL_SOURCES["time"], *(_FINGERPRINT_SOURCES if spec != "envelope-id" else ()))
    for spec in ("envelope-id", "auto", "genesys", "nice")
}
#: Per strategy, the hash of its :data:`SOURCES` the builder was checked against.
VALIDATED: dict[str, str] = {
    "envelope-id": "d6b4f99a9a2748b612abb9821e50a8f20dff3a2d2ef1dfefef0fccad9d29dc04",
    "auto": "37b3a309f2e0b34a5b28df545d1f72144bf589acba15de94d678dbf00dc410bb",
    "genesys": "f3796c51ded145036cbc33107417f7b3ac7f3800acb6585bc094daec609d8a06",
    "nice": "f3796c51ded145036cbc33107417f7b3ac7f3800acb6585bc094daec609d8a06",
}
_MODES = {"envelope-id": 0, "auto": 1, "genesys": 2, "nice": 3}
_ENVELOPE_ID, _AUTO, _GENESYS, _NICE = range(4)

#: Row status: keyed here, or left for the Python strategy.
KEYED, UNCERTAIN = 1, 0

# Token kinds of the tokenizer; a lookup's result when a name is missing, or when the row must go to Python.
_OBJ, _ARR, _STR, _ESC, _INT, _FLOAT, _TRUE, _FALSE, _NULL = range(1, 10)
_MISSING, _BAIL = -1, -2
#: What a key writer returns when it writes no key: not certain (Python decides), the family would key on a
#: body fingerprint, the strategy raises NoKey (``auto`` then keys the event by content).
_UNSURE, _FINGERPRINT, _NOKEY = -1, -3, -4
#: A token's fields (a row of the token array): kind, text start and end, member name start and end, the token
#: after its subtree, a container's member count, whether an object has an escaped member name.
_K, _VS, _VE, _NS, _NE, _NX, _NC, _EN = range(8)
_TOKEN_FIELDS = 8
_ID, _ITEM, _TIME = range(3)
_MAX_DEPTH = 256
#: Longer numbers are left to Python (``int()`` refuses over 4300 digits).
_MAX_NUMBER_CHARS = 1000
_SECONDS_BELOW = 100_000_000_000


def validated(spec: object) -> bool:
    """Whether the builder may key ``spec`` (a strategy spec string)."""
    if not isinstance(spec, str) or spec.strip() not in SOURCES:
        return False
    spec = spec.strip()
    return VALIDATED.get(spec, "") == names_sha256(SOURCES[spec])


# ---- the catalogue as arrays ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """The strings and families the compiled loop reads, generated from :mod:`dedup.key_catalogue`."""

    text: np.ndarray  # uint8: every string below, concatenated
    at: np.ndarray  # int64 (n, 2): string i is text[at[i, 0]:at[i, 1]]
    genesys: np.ndarray  # int64 (n, 4): topic prefix, suffix, suffix is '*contains', family (-1: fingerprint)
    nice_match: np.ndarray  # int64 (n, 2): family (-1: fingerprint), a name marking it; in catalogue order
    families: np.ndarray  # int64 (n, 3): first field, end of fields, items over times
    fields: np.ndarray  # int64 (n, 5): kind, path, first segment, end of segments, is 'list[].name'
    segments: np.ndarray  # int64 (n,): string of each segment (a list's name without '[]')
    names: np.ndarray  # int64: the fixed strings, in the order of _NAMES

    def as_tuple(self) -> tuple[np.ndarray, ...]:
        return (self.text, self.at, self.genesys, self.nice_match, self.families, self.fields,
                self.segments, self.names)


_NAMES = ("source", "detail", "time", "id", "topicName", "eventBody", "payload", "eventType", "Type",
          "detail-type", "genesys:", "nice:", "id:", key_catalogue.GENESYS_SOURCE_PREFIX,
          key_catalogue.NICE_BRIDGE_SOURCE, "timestamp")
(_N_SOURCE, _N_DETAIL, _N_TIME, _N_ID, _N_TOPIC, _N_BODY, _N_PAYLOAD, _N_EVENT_TYPE, _N_TYPE, _N_DETAIL_TYPE,
 _N_GENESYS_HEAD, _N_NICE_HEAD, _N_ID_HEAD, _N_GENESYS_PREFIX, _N_NICE_SOURCE,
 _N_TIMESTAMP) = range(len(_NAMES))


@cache
def tables() -> _Tables:
    """The catalogue as arrays (raises ValueError for a path shape the compiled loop does not read)."""
    strings: dict[str, int] = {}

    def string(s: str) -> int:
        return strings.setdefault(s, len(strings))

    names = [string(n) for n in _NAMES]
    families, fields, segments = [], [], []
    program: dict[str, int] = {}

    def family_of(family: key_catalogue.Family, nested: bool) -> int:
        if family.fingerprint_only:
            return -1
        if family.name not in program:
            program[family.name] = len(families)
            first = len(fields)
            for path, segs, kind, _ in family.paths:
                segs = segs or (path,)
                is_list = any(s.endswith("[]") for s in segs)
                if is_list and (len(segs) != 2 or not segs[0].endswith("[]")):
                    raise ValueError(f"{path}: only 'list[].name' paths are built")
                if len(segs) > 1 and not nested:
                    raise ValueError(f"{path}: only top-level NICE names are built")
                start = len(segments)
                segments.extend(string(s.removesuffix("[]")) for s in segs)
                fields.append((("id", "item", "time").index(kind), string(path), start, len(segments),
                               int(is_list)))
            families.append((first, len(fields), int(family.items_over_times)))
        return program[family.name]

    genesys = []
    for prefix, group in key_catalogue._GENESYS_BY_PREFIX.items():
        for family in group:
            suffix = family.match[1]
            star = suffix.startswith("*")
            genesys.append((string(prefix), string(suffix[1:] if star else suffix), int(star),
                            family_of(family, nested=True)))
    nice = [(family_of(family, nested=False), string(name))
            for family in key_catalogue.NICE_FAMILIES for name in family.match]
    encoded = [s.encode() for s in strings]
    ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)
    at = np.stack([ends - [len(b) for b in encoded], ends], axis=1).astype(np.int64)

    def table(rows: list, width: int) -> np.ndarray:
        return np.array(rows, dtype=np.int64).reshape(-1, width)

    return _Tables(np.frombuffer(b"".join(encoded), np.uint8).copy(), at, table(genesys, 4), table(nice, 2),
                   table(families, 3), table(fields, 5), np.array(segments, np.int64),
                   np.array(names, np.int64))


# ---- the compiled loop -----------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _ws(buf, p, e):
    while p < e:
        c = buf[p]
        if c == 32 or c == 9 or c == 10 or c == 13:
            p += 1
        else:
            break
    return p


@njit(cache=True, nogil=True)
def _string_end(buf, p, e):
    """The closing quote of the string whose text starts at ``p`` (-1: not JSON), and whether it escapes."""
    escaped = False
    while p < e:
        c = buf[p]
        if c == 34:
            return p, escaped
        if c == 92:
            escaped = True
            if p + 1 >= e:
                return -1, escaped
            d = buf[p + 1]
            if d == 117:  # \uXXXX
                if p + 6 > e:
                    return -1, escaped
                for q in range(p + 2, p + 6):
                    h = buf[q]
                    if not (48 <= h <= 57 or 65 <= h <= 70 or 97 <= h <= 102):
                        return -1, escaped
                p += 6
            elif d == 34 or d == 92 or d == 47 or d == 98 or d == 102 or d == 110 or d == 114 or d == 116:
                p += 2
            else:
                return -1, escaped
        elif c < 32:  # json.loads (strict) refuses control characters in strings
            return -1, escaped
        else:
            p += 1
    return -1, escaped


@njit(cache=True, nogil=True)
def _is_digit(c):
    return 48 <= c <= 57


@njit(cache=True, nogil=True)
def _literal(buf, p, e, word):
    """Whether ``word`` (bytes as a uint8 array) is at ``p``."""
    n = len(word)
    if p + n > e:
        return False
    k = 0
    while k < n and buf[p + k] == word[k]:
        k += 1
    return k == n


_TRUE_W = np.frombuffer(b"true", np.uint8).copy()
_FALSE_W = np.frombuffer(b"false", np.uint8).copy()
_NULL_W = np.frombuffer(b"null", np.uint8).copy()
_NAN_W = np.frombuffer(b"NaN", np.uint8).copy()
_INF_W = np.frombuffer(b"Infinity", np.uint8).copy()


@njit(cache=True, nogil=True)
def _number_end(buf, p, e):
    """The end of the JSON number at ``p`` (-1: not one json.loads reads), and whether it is an integer."""
    q = p
    if q < e and buf[q] == 45:
        q += 1
    if q >= e:
        return -1, False
    c = buf[q]
    if c == 73:  # -Infinity
        return (q + 8, False) if _literal(buf, q, e, _INF_W) else (-1, False)
    if c == 48:
        q += 1
    elif 49 <= c <= 57:
        while q < e and _is_digit(buf[q]):
            q += 1
    else:
        return -1, False
    is_int = True
    if q < e and buf[q] == 46:
        q += 1
        if q >= e or not _is_digit(buf[q]):
            return -1, False
        while q < e and _is_digit(buf[q]):
            q += 1
        is_int = False
    if q < e and (buf[q] == 101 or buf[q] == 69):
        q += 1
        if q < e and (buf[q] == 43 or buf[q] == 45):
            q += 1
        if q >= e or not _is_digit(buf[q]):
            return -1, False
        while q < e and _is_digit(buf[q]):
            q += 1
        is_int = False
    if q - p > _MAX_NUMBER_CHARS:
        return -1, False
    return q, is_int


@njit(cache=True, nogil=True)
def _tokenize(buf, s, e, tk, stack):
    """Tokens of the line ``buf[s:e]`` into rows of ``tk`` in document order (fields ``_K`` ... ``_EN``), or
    -1 when it is not JSON that json.loads reads alike. A token's text is a string's inside its quotes or a
    number's characters; its member name is -1 in a list. Returns the number of tokens.
    """
    p = _ws(buf, s, e)
    n = 0
    depth = 0
    name_s = -1
    name_e = -1
    state = 0  # 0: a value, 1: a member name, 2: after a value
    while True:
        if state == 0:
            if p >= e:
                return -1
            c = buf[p]
            i = n
            n += 1
            tk[i, _NS] = name_s
            tk[i, _NE] = name_e
            if depth > 0:
                tk[stack[depth - 1], _NC] += 1
            if c == 123 or c == 91:
                tk[i, _K] = _OBJ if c == 123 else _ARR
                tk[i, _NC] = 0
                tk[i, _EN] = 0
                if depth == _MAX_DEPTH:
                    return -1
                stack[depth] = i
                depth += 1
                p = _ws(buf, p + 1, e)
                if p < e and buf[p] == c + 2:  # } or ]
                    p += 1
                    depth -= 1
                    tk[i, _NX] = n
                    state = 2
                elif c == 123:
                    state = 1
                else:
                    name_s = -1
                    name_e = -1
            elif c == 34:
                q, escaped = _string_end(buf, p + 1, e)
                if q < 0:
                    return -1
                tk[i, _K] = _ESC if escaped else _STR
                tk[i, _VS] = p + 1
                tk[i, _VE] = q
                tk[i, _NX] = n
                p = q + 1
                state = 2
            elif c == 45 or _is_digit(c):
                q, is_int = _number_end(buf, p, e)
                if q < 0:
                    return -1
                tk[i, _K] = _INT if is_int else _FLOAT
                tk[i, _VS] = p
                tk[i, _VE] = q
                tk[i, _NX] = n
                p = q
                state = 2
            else:
                if _literal(buf, p, e, _TRUE_W):
                    tk[i, _K] = _TRUE
                    p += 4
                elif _literal(buf, p, e, _FALSE_W):
                    tk[i, _K] = _FALSE
                    p += 5
                elif _literal(buf, p, e, _NULL_W):
                    tk[i, _K] = _NULL
                    p += 4
                elif _literal(buf, p, e, _NAN_W):
                    tk[i, _K] = _FLOAT
                    p += 3
                elif _literal(buf, p, e, _INF_W):
                    tk[i, _K] = _FLOAT
                    p += 8
                else:
                    return -1
                tk[i, _NX] = n
                state = 2
        elif state == 1:
            if p >= e or buf[p] != 34:
                return -1
            q, escaped = _string_end(buf, p + 1, e)
            if q < 0:
                return -1
            if escaped:
                tk[stack[depth - 1], _EN] = 1
            name_s = p + 1
            name_e = q
            p = _ws(buf, q + 1, e)
            if p >= e or buf[p] != 58:
                return -1
            p = _ws(buf, p + 1, e)
            state = 0
        else:
            p = _ws(buf, p, e)
            if depth == 0:
                return n if p == e else -1
            if p >= e:
                return -1
            top = stack[depth - 1]
            c = buf[p]
            if c == 44:
                p = _ws(buf, p + 1, e)
                if tk[top, _K] == _OBJ:
                    state = 1
                else:
                    name_s = -1
                    name_e = -1
                    state = 0
            elif (c == 125 and tk[top, _K] == _OBJ) or (c == 93 and tk[top, _K] == _ARR):
                p += 1
                depth -= 1
                tk[top, _NX] = n
            else:
                return -1


@njit(cache=True, nogil=True)
def _same(buf, a, b, text, at, k):
    """Whether ``buf[a:b]`` is string ``k`` of the tables."""
    lo = at[k, 0]
    n = b - a
    if n != at[k, 1] - lo:
        return False
    j = 0
    while j < n and buf[a + j] == text[lo + j]:
        j += 1
    return j == n


@njit(cache=True, nogil=True)
def _starts(buf, a, b, text, at, k):
    lo = at[k, 0]
    n = at[k, 1] - lo
    return b - a >= n and _same(buf, a, a + n, text, at, k)


@njit(cache=True, nogil=True)
def _contains(buf, a, b, text, at, k):
    n = at[k, 1] - at[k, 0]
    q = a
    while q <= b - n and not _same(buf, q, q + n, text, at, k):
        q += 1
    return q <= b - n


@njit(cache=True, nogil=True)
def _find(buf, tk, obj, text, at, k):
    """The member named string ``k`` of token ``obj``: its token, _MISSING (or ``obj`` is no object), or
    _BAIL when the object repeats the name or has an escaped name (json.loads would decide)."""
    if obj < 0 or tk[obj, _K] != _OBJ:
        return _MISSING
    if tk[obj, _EN]:
        return _BAIL
    found = _MISSING
    c = obj + 1
    for _ in range(tk[obj, _NC]):
        if _same(buf, tk[c, _NS], tk[c, _NE], text, at, k):
            if found != _MISSING:
                return _BAIL
            found = c
        c = tk[c, _NX]
    return found


@njit(cache=True, nogil=True)
def _put(out, pos, src, a, b):
    for j in range(b - a):
        out[pos + j] = src[a + j]
    return pos + b - a


@njit(cache=True, nogil=True)
def _put_int(out, pos, value):
    if value < 0:
        out[pos] = 45
        pos += 1
        value = -value
    digits = 1
    v = value
    while v >= 10:
        v //= 10
        digits += 1
    for j in range(digits - 1, -1, -1):
        out[pos + j] = 48 + value % 10
        value //= 10
    return pos + digits


@njit(cache=True, nogil=True)
def _digits(buf, a, n):
    v = 0
    for j in range(n):
        c = buf[a + j]
        if not _is_digit(c):
            return -1
        v = v * 10 + (c - 48)
    return v


@njit(cache=True, nogil=True)
def _days_from_civil(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True, nogil=True)
def _iso_ms(buf, a, b):
    """Epoch ms of strict ISO-8601 text (``YYYY-MM-DDTHH:MM:SS[.fff|.ffffff][Z|±HH:MM]``, a real date, year
    from 1000), floored to the millisecond as ``dedup.canonical.epoch_ms``; (False, 0) for anything else."""
    if b - a < 19:
        return False, 0
    for j, sep in ((4, 45), (7, 45), (10, 84), (13, 58), (16, 58)):
        if buf[a + j] != sep:
            return False, 0
    year, month, day = _digits(buf, a, 4), _digits(buf, a + 5, 2), _digits(buf, a + 8, 2)
    hour, minute, second = _digits(buf, a + 11, 2), _digits(buf, a + 14, 2), _digits(buf, a + 17, 2)
    if year < 1000 or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23 or minute < 0 \
            or minute > 59 or second < 0 or second > 59:
        return False, 0
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if day > month_days[month - 1]:
        return False, 0
    p = a + 19
    ms = 0
    if p < b and buf[p] == 46:
        n = 0
        while p + 1 + n < b and _is_digit(buf[p + 1 + n]):
            n += 1
        if n != 3 and n != 6:
            return False, 0
        ms = _digits(buf, p + 1, 3)
        p += 1 + n
    offset_min = 0
    if p < b and buf[p] == 90:
        p += 1
    elif p < b and (buf[p] == 43 or buf[p] == 45):
        if b - p != 6 or buf[p + 3] != 58:
            return False, 0
        oh, om = _digits(buf, p + 1, 2), _digits(buf, p + 4, 2)
        if oh < 0 or oh > 23 or om < 0 or om > 59:
            return False, 0
        offset_min = oh * 60 + om
        if buf[p] == 45:
            offset_min = -offset_min
        p += 6
    if p != b:
        return False, 0
    seconds = ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second
    return True, (seconds - offset_min * 60) * 1000 + ms


@njit(cache=True, nogil=True)
def _time_ms(buf, tk, v):
    """``epoch_ms`` of token ``v`` where certain: an integer of at most 18 digits, or strict ISO-8601."""
    if tk[v, _K] == _INT:
        a = tk[v, _VS]
        negative = buf[a] == 45
        if negative:
            a += 1
        if tk[v, _VE] - a > 18:
            return False, 0
        value = _digits(buf, a, tk[v, _VE] - a)
        if negative:
            value = -value
        return True, value * 1000 if abs(value) < _SECONDS_BELOW else value
    if tk[v, _K] == _STR:
        return _iso_ms(buf, tk[v, _VS], tk[v, _VE])
    return False, 0


@njit(cache=True, nogil=True)
def _put_text(buf, tk, v, out, pos):
    """``dedup.keys._text`` of a plain string, an integer or a boolean (-1: anything else)."""
    k = tk[v, _K]
    if k == _STR:
        return _put(out, pos, buf, tk[v, _VS], tk[v, _VE])
    if k == _INT:
        if tk[v, _VE] - tk[v, _VS] == 2 and buf[tk[v, _VS]] == 45:  # -0 is the int 0
            return -1
        return _put(out, pos, buf, tk[v, _VS], tk[v, _VE])
    if k == _TRUE:
        return _put(out, pos, _TRUE_W, 0, 4)
    if k == _FALSE:
        return _put(out, pos, _FALSE_W, 0, 5)
    return -1


@njit(cache=True, nogil=True)
def _absent(tk, v):
    """``value is None or value == ""``."""
    return v < 0 or tk[v, _K] == _NULL or (tk[v, _K] == _STR and tk[v, _VE] == tk[v, _VS])


@njit(cache=True, nogil=True)
def _resolve(buf, tk, node, tables, first, end):
    """``dedup.key_catalogue.resolve`` of the segments ``first:end`` (no list) from token ``node``."""
    text, at, _, _, _, _, segments, _ = tables
    for j in range(first, end):
        if node < 0 or tk[node, _K] != _OBJ:
            return _MISSING
        node = _find(buf, tk, node, text, at, segments[j])
        if node == _BAIL:
            return _BAIL
        if node < 0 or tk[node, _K] == _NULL:
            return _MISSING
    return node


@njit(cache=True, nogil=True)
def _put_list(buf, tk, body, tables, j, out, pos):
    """The text of a ``list[].name`` field: its objects' non-empty names joined by ',' (pos unchanged: none;
    -1: uncertain)."""
    text, at, _, _, _, fields, segments, _ = tables
    items = _find(buf, tk, body, text, at, segments[fields[j, 2]])
    if items == _BAIL:
        return -1
    if items < 0 or tk[items, _K] != _ARR:
        return pos
    start = pos
    x = items + 1
    for _ in range(tk[items, _NC]):
        if tk[x, _K] == _OBJ:
            v = _find(buf, tk, x, text, at, segments[fields[j, 2] + 1])
            if v == _BAIL:
                return -1
            if not _absent(tk, v):
                if pos != start:
                    out[pos] = 44
                    pos += 1
                pos = _put_text(buf, tk, v, out, pos)
                if pos < 0:
                    return -1
        x = tk[x, _NX]
    return pos


@njit(cache=True, nogil=True)
def _put_family(buf, tk, body, outer, family, tables, out, pos):
    """``dedup.keys._family_key`` after its head, where it keys on fields: the new end, _FINGERPRINT (no item
    or time present), or _UNSURE (a value this loop does not render exactly)."""
    text, at, _, _, families, fields, _, _ = tables
    anchored = False
    skip_times = False
    for j in range(families[family, 0], families[family, 1]):
        field_kind = fields[j, 0]
        if skip_times and field_kind == _TIME:
            break
        path = fields[j, 1]
        label = pos
        out[pos] = 124  # |
        pos = _put(out, pos + 1, text, at[path, 0], at[path, 1])
        if fields[j, 4]:
            end = _put_list(buf, tk, body, tables, j, out, pos + 1)
            if end < 0:
                return -1
            if end == pos + 1:
                pos = label
                continue
            out[pos] = 61  # =
            pos = end
        else:
            v = _resolve(buf, tk, body, tables, fields[j, 2], fields[j, 3])
            if v == _MISSING and outer >= 0:
                v = _resolve(buf, tk, outer, tables, fields[j, 2], fields[j, 3])
            if v == _BAIL:
                return -1
            if _absent(tk, v):
                pos = label
                continue
            if field_kind == _TIME:
                if tk[v, _K] == _TRUE or tk[v, _K] == _FALSE:  # not a time: its canonical text
                    out[pos] = 126  # ~
                    pos = _put_text(buf, tk, v, out, pos + 1)
                else:
                    ok, ms = _time_ms(buf, tk, v)
                    if not ok:
                        return -1
                    out[pos] = 61
                    pos = _put_int(out, pos + 1, ms)
            else:
                out[pos] = 61
                pos = _put_text(buf, tk, v, out, pos + 1)
                if pos < 0:
                    return -1
        anchored = True if field_kind != _ID else anchored
        if field_kind == _ITEM and families[family, 2]:
            skip_times = True
    return pos if anchored else _FINGERPRINT


@njit(cache=True, nogil=True)
def _name_order(buf, tk, x, y):
    """-1, 0 or 1 as the member name of token ``x`` sorts before, with or after that of ``y`` (UTF-8 bytes
    sort as code points, as ``sort_keys`` does)."""
    a, b, c, d = tk[x, _NS], tk[x, _NE], tk[y, _NS], tk[y, _NE]
    for j in range(min(b - a, d - c)):
        if buf[a + j] != buf[c + j]:
            return -1 if buf[a + j] < buf[c + j] else 1
    return -1 if b - a < d - c else (0 if b - a == d - c else 1)


@njit(cache=True, nogil=True)
def _plain_float(buf, a, b):
    """Whether ``repr(float(text))`` is ``buf[a:b]`` itself, as JCS writes it: positional digits, a non-zero
    last decimal, at most 15 significant digits (so no shorter decimal names the same double) and a magnitude
    from 1e-4 (``repr`` writes exponents below; JCS from 1e-6) to 1e16."""
    p = a + 1 if buf[a] == 45 else a
    q = p
    while q < b and _is_digit(buf[q]):
        q += 1
    if q == p or q >= b or buf[q] != 46:
        return False
    f = q + 1
    r = f
    while r < b and _is_digit(buf[r]):
        r += 1
    if r != b or r == f or buf[r - 1] == 48:
        return False
    if q - p == 1 and buf[p] == 48:
        z = f
        while buf[z] == 48:
            z += 1
        return z - f <= 3 and r - z <= 15
    return (q - p) + (r - f) <= 15


@njit(cache=True, nogil=True)
def _put_scalar(buf, tk, v, out, pos):
    """The canonical JSON (``dedup.canonical.canonical_json``) of a scalar token, or -1 where not certain."""
    k = tk[v, _K]
    a, b = tk[v, _VS], tk[v, _VE]
    if k == _STR:  # no escapes in, none needed out (a raw string has no quote, backslash or control char)
        out[pos] = 34
        pos = _put(out, pos + 1, buf, a, b)
        out[pos] = 34
        return pos + 1
    if k == _INT:
        return -1 if b - a == 2 and buf[a] == 45 else _put(out, pos, buf, a, b)
    if k == _FLOAT:
        return _put(out, pos, buf, a, b) if _plain_float(buf, a, b) else -1
    if k == _TRUE:
        return _put(out, pos, _TRUE_W, 0, 4)
    if k == _FALSE:
        return _put(out, pos, _FALSE_W, 0, 5)
    if k == _NULL:
        return _put(out, pos, _NULL_W, 0, 4)
    return -1


@njit(cache=True, nogil=True)
def _put_name(buf, tk, c, out, pos):
    out[pos] = 34
    pos = _put(out, pos + 1, buf, tk[c, _NS], tk[c, _NE])
    out[pos] = 34
    out[pos + 1] = 58
    return pos + 2


@njit(cache=True, nogil=True)
def _put_canonical(buf, tk, v, out, pos, order, frames):
    """``canonical_json`` (RFC 8785) of token ``v`` (``null`` when missing), or -1 where not certain: an
    escaped string or name, a float not written as its own text, a repeated name, a name outside the BMP.

    Objects' members are sorted by name into ``order``; ``frames`` holds the open containers."""
    if v < 0:
        return _put(out, pos, _NULL_W, 0, 4)
    depth = 0
    used = 0
    cur = v
    while True:
        k = tk[cur, _K]
        container = k in (_OBJ, _ARR)
        if container and tk[cur, _NC] > 0:
            n = tk[cur, _NC]
            if (k == _OBJ and tk[cur, _EN]) or depth == _MAX_DEPTH:
                return -1
            out[pos] = 123 if k == _OBJ else 91
            pos += 1
            base = used
            c = cur + 1
            for j in range(n):
                q = base + j
                if k == _OBJ:
                    for x in range(tk[c, _NS], tk[c, _NE]):
                        if buf[x] >= 0xF0:  # outside the BMP: UTF-16 order differs from code point order
                            return -1
                    while q > base and _name_order(buf, tk, c, order[q - 1]) < 0:
                        order[q] = order[q - 1]
                        q -= 1
                order[q] = c
                c = tk[c, _NX]
            if k == _OBJ:
                for j in range(base + 1, base + n):
                    if _name_order(buf, tk, order[j - 1], order[j]) == 0:
                        return -1
            used += n
            frames[depth, 0] = cur
            frames[depth, 1] = base
            frames[depth, 2] = 0
            depth += 1
            cur = order[base]
            if k == _OBJ:
                pos = _put_name(buf, tk, cur, out, pos)
            continue
        if container:
            out[pos] = 123 if k == _OBJ else 91
            out[pos + 1] = 125 if k == _OBJ else 93
            pos += 2
        else:
            pos = _put_scalar(buf, tk, cur, out, pos)
            if pos < 0:
                return -1
        while depth > 0:  # the value is written: on to its next sibling, or close its container
            f = depth - 1
            container = frames[f, 0]
            frames[f, 2] += 1
            if frames[f, 2] < tk[container, _NC]:
                out[pos] = 44
                pos += 1
                cur = order[frames[f, 1] + frames[f, 2]]
                if tk[container, _K] == _OBJ:
                    pos = _put_name(buf, tk, cur, out, pos)
                break
            out[pos] = 125 if tk[container, _K] == _OBJ else 93
            pos += 1
            used = frames[f, 1]
            depth -= 1
        if depth == 0:
            return pos


@njit(cache=True, nogil=True)
def _put_body(buf, tk, v, out, pos, order, frames, span):
    """``|body=`` and the canonical JSON of token ``v``, whose span ``span`` records (its BLAKE2b digest
    replaces it: :func:`_digests`), or -1."""
    label = _BODY_W
    pos = _put(out, pos, label, 0, len(label))
    span[0] = pos
    pos = _put_canonical(buf, tk, v, out, pos, order, frames)
    span[1] = pos
    return pos


_BODY_W = np.frombuffer(b"|body=", np.uint8).copy()
_STAMP_W = np.frombuffer(b"|timestamp=", np.uint8).copy()
_FP_W = np.frombuffer(b"fp:", np.uint8).copy()


@njit(cache=True, nogil=True)
def _content(buf, tk, source, detail, tables, out, pos, order, frames, span):
    """``ContentFingerprint``: ``fp:`` and the canonical JSON of ``[source, detail-type, detail]``, or -1."""
    text, at, _, _, _, _, _, names = tables
    detail_type = _find(buf, tk, 0, text, at, names[_N_DETAIL_TYPE])
    if detail_type == _BAIL:
        return -1
    pos = _put(out, pos, _FP_W, 0, 3)
    span[0] = pos
    out[pos] = 91
    pos = _put_canonical(buf, tk, source, out, pos + 1, order, frames)
    if pos < 0:
        return -1
    out[pos] = 44
    pos = _put_canonical(buf, tk, detail_type, out, pos + 1, order, frames)
    if pos < 0:
        return -1
    out[pos] = 44
    pos = _put_canonical(buf, tk, detail, out, pos + 1, order, frames)
    if pos < 0:
        return -1
    out[pos] = 93
    span[1] = pos + 1
    return pos + 1


@njit(cache=True, nogil=True)
def _genesys(buf, tk, detail, tables, out, pos, order, frames, span):
    """``GenesysKey``: head and fields or body fingerprint, _NOKEY, or _UNSURE."""
    text, at, genesys, _, _, _, _, names = tables
    topic = _find(buf, tk, detail, text, at, names[_N_TOPIC])
    body = _find(buf, tk, detail, text, at, names[_N_BODY])
    if topic == _BAIL or body == _BAIL or (topic >= 0 and tk[topic, _K] == _ESC):
        return _UNSURE
    if topic < 0 or tk[topic, _K] != _STR or tk[topic, _VE] == tk[topic, _VS]:
        return _NOKEY
    if body < 0 or tk[body, _K] != _OBJ:
        return _NOKEY
    a, b = tk[topic, _VS], tk[topic, _VE]
    family = -1
    for r in range(genesys.shape[0]):
        prefix, suffix = genesys[r, 0], genesys[r, 1]
        if not _starts(buf, a, b, text, at, prefix):
            continue
        n = at[suffix, 1] - at[suffix, 0]
        if genesys[r, 2]:
            found = _contains(buf, a + at[prefix, 1] - at[prefix, 0], b, text, at, suffix)
        else:
            found = b - a >= n and _same(buf, b - n, b, text, at, suffix)
        if found:
            family = genesys[r, 3]
            break
    head = names[_N_GENESYS_HEAD]
    pos = _put(out, pos, text, at[head, 0], at[head, 1])
    pos = _put(out, pos, buf, a, b)
    if family >= 0:  # else an uncatalogued topic, or a family without fields: a body fingerprint
        end = _put_family(buf, tk, body, -1, family, tables, out, pos)
        if end != _FINGERPRINT:
            return end
    pos = _put_body(buf, tk, body, out, pos, order, frames, span)
    stamp = _find(buf, tk, detail, text, at, names[_N_TIMESTAMP])
    if pos < 0 or stamp == _BAIL:
        return _UNSURE
    if _absent(tk, stamp):
        return pos
    ok, ms = _time_ms(buf, tk, stamp)
    if not ok:
        return _UNSURE
    pos = _put(out, pos, _STAMP_W, 0, len(_STAMP_W))
    return _put_int(out, pos, ms)


@njit(cache=True, nogil=True)
def _nice(buf, tk, root, detail, tables, out, pos, order, frames, span):
    """``NiceKey``: head and fields or body fingerprint, _NOKEY, or _UNSURE."""
    text, at, _, nice_match, _, _, _, names = tables
    payload = _find(buf, tk, detail, text, at, names[_N_PAYLOAD])
    if payload == _BAIL:
        return -1
    wrapped = payload >= 0 and tk[payload, _K] == _OBJ
    body = payload if wrapped else detail
    outer = detail if wrapped else -1
    family = -1
    for r in range(nice_match.shape[0]):
        v = _find(buf, tk, body, text, at, nice_match[r, 1])
        if v == _BAIL:
            return -1
        if not _absent(tk, v):
            family = nice_match[r, 0]
            break
    if family < 0:
        return _NOKEY
    # The event type: the first truthy of detail.eventType, detail.Type, the body's Type, detail-type (a plain
    # string; any other truthy or falsy value, or none at all, is left to Python).
    event_type = -1
    for where, name in ((detail, _N_EVENT_TYPE), (detail, _N_TYPE), (body, _N_TYPE), (root, _N_DETAIL_TYPE)):
        v = _find(buf, tk, where, text, at, names[name])
        if v == _BAIL:
            return -1
        if _absent(tk, v):
            continue
        if tk[v, _K] != _STR:
            return -1
        event_type = v
        break
    if event_type < 0:
        return -1
    head = names[_N_NICE_HEAD]
    pos = _put(out, pos, text, at[head, 0], at[head, 1])
    pos = _put(out, pos, buf, tk[event_type, _VS], tk[event_type, _VE])
    end = _put_family(buf, tk, body, outer, family, tables, out, pos)
    if end != _FINGERPRINT:
        return end
    return _put_body(buf, tk, body, out, pos, order, frames, span)


_MD5_SHIFTS = np.array([7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4,
                       np.int64)
_MD5_SINES = np.array([int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64)], np.int64)
_U32 = 0xFFFFFFFF


@njit(cache=True, nogil=True)
def _md5_block(block, at, state):
    """One 64-byte block ``block[at:at + 64]`` into the MD5 ``state`` (four 32-bit words, RFC 1321)."""
    a, b, c, d = state[0], state[1], state[2], state[3]
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & _U32 & d)
            g = i
        elif i < 32:
            f = (d & b) | (~d & _U32 & c)
            g = (5 * i + 1) % 16
        elif i < 48:
            f = b ^ c ^ d
            g = (3 * i + 5) % 16
        else:
            f = c ^ (b | (~d & _U32))
            g = (7 * i) % 16
        w = at + 4 * g
        word = block[w] | (block[w + 1] << 8) | (block[w + 2] << 16) | (np.int64(block[w + 3]) << 24)
        f = (f + a + _MD5_SINES[i] + word) & _U32
        a, d, c = d, c, b
        shift = _MD5_SHIFTS[i]
        b = (b + (((f << shift) | (f >> (32 - shift))) & _U32)) & _U32
    state[0] = (state[0] + a) & _U32
    state[1] = (state[1] + b) & _U32
    state[2] = (state[2] + c) & _U32
    state[3] = (state[3] + d) & _U32


@njit(cache=True, nogil=True)
def _md5_halves(buf, a, b, state, tail):
    """The digest halves of ``buf[a:b]`` as :func:`dedup.columnar.derive.python_keys` takes them from
    ``hashlib.md5``: of the digest as a little-endian integer, bits 65 and up, and the low 63 bits."""
    state[0], state[1], state[2], state[3] = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    n = b - a
    p = a
    while b - p >= 64:
        _md5_block(buf, p, state)
        p += 64
    rest = b - p
    for j in range(rest):
        tail[j] = buf[p + j]
    tail[rest] = 0x80
    size = 64 if rest < 56 else 128
    for j in range(rest + 1, size - 8):
        tail[j] = 0
    bits = n * 8
    for j in range(8):
        tail[size - 8 + j] = (bits >> (8 * j)) & 0xFF
    _md5_block(tail, 0, state)
    if size == 128:
        _md5_block(tail, 64, state)
    lo = state[0] | ((state[1] & 0x7FFFFFFF) << 32)
    hi = (state[2] >> 1) | (state[3] << 31)
    return hi, lo


@njit(cache=True, nogil=True)
def _build(data, offsets, valid, first, mode, need_time, tables, out, out_ends, bodies, status, time_ms,
           hi, lo, tk, stack, order, frames):
    """Keys rows ``first:`` into ``out`` (row i's key ends at ``out_ends[i]``), until ``out`` may not hold
    the next row: returns the row reached. ``status[i]`` is KEYED or UNCERTAIN; ``time_ms[i]`` the envelope
    time; ``hi[i]`` and ``lo[i]`` the digest halves of the key, unless ``bodies[i]`` holds the span of it
    that is canonical JSON to digest first (:func:`_digests`)."""
    state = np.zeros(4, np.int64)
    tail = np.zeros(128, np.uint8)
    text, at, _, _, _, _, _, names = tables
    room = at[-1, 1] + 64  # every label once, and digits
    pos = out_ends[first - 1] if first > 0 else 0
    for i in range(first, len(offsets) - 1):
        s, e = offsets[i], offsets[i + 1]
        if pos + (e - s) * 2 + room > len(out):
            return i
        status[i] = UNCERTAIN
        out_ends[i] = pos
        span = bodies[i]
        span[0] = -1
        if not valid[i] or _tokenize(data, s, e, tk, stack) < 0 \
                or tk[0, _K] != _OBJ:
            continue
        source = _find(data, tk, 0, text, at, names[_N_SOURCE])
        detail = _find(data, tk, 0, text, at, names[_N_DETAIL])
        if source < 0 or detail < 0:
            continue
        if need_time:
            t = _find(data, tk, 0, text, at, names[_N_TIME])
            if t < 0:
                continue
            ok, ms = _time_ms(data, tk, t)
            if not ok:
                continue
            time_ms[i] = ms
        end = -1
        if mode == _ENVELOPE_ID:
            v = _find(data, tk, 0, text, at, names[_N_ID])
            if v >= 0 and tk[v, _K] == _STR and tk[v, _VE] > tk[v, _VS]:
                head = names[_N_ID_HEAD]
                end = _put(out, pos, text, at[head, 0], at[head, 1])
                end = _put(out, end, data, tk[v, _VS], tk[v, _VE])
        elif tk[detail, _K] == _OBJ and not (mode != _NICE and tk[source, _K] == _ESC):
            genesys = False
            nice = mode == _NICE
            if mode != _NICE and tk[source, _K] == _STR:
                a, b = tk[source, _VS], tk[source, _VE]
                genesys = _starts(data, a, b, text, at, names[_N_GENESYS_PREFIX])
                nice = mode == _AUTO and _same(data, a, b, text, at, names[_N_NICE_SOURCE])
            end = _NOKEY
            if genesys:
                end = _genesys(data, tk, detail, tables, out, pos, order, frames, span)
            elif nice:
                end = _nice(data, tk, 0, detail, tables, out, pos, order, frames, span)
            if end == _NOKEY and mode == _AUTO:  # auto keys it by content
                span[0] = -1
                end = _content(data, tk, source, detail, tables, out, pos, order, frames, span)
        if end >= 0:
            status[i] = KEYED
            if span[0] < 0:
                hi[i], lo[i] = _md5_halves(out, pos, end, state, tail)
            pos = end
            out_ends[i] = pos
    return len(offsets) - 1


# ---- the chunk interface -----------------------------------------------------------------------------


#: The low digest half's mask, and a row's time when it has none: the conventions of
#: :func:`dedup.columnar.derive.python_keys`, which this module's output is merged with.
MASK63 = (1 << 63) - 1
NO_TIME = np.iinfo(np.int64).min


def build_keys(lines: Any, spec: str, need_time: bool, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digest halves (-1 where not keyed here), envelope time and KEYED / UNCERTAIN status of ``lines``
    (a pyarrow string array, nulls allowed) under the strategy ``spec``, on ``threads`` threads (default
    all cores; the compiled loop holds no lock).

    The digest halves are those of :func:`dedup.columnar.derive.python_keys`: MD5 of the raw key as a
    little-endian integer, its bits above 65 and its low 63 bits.
    """
    import pyarrow as pa

    mode = _MODES[spec.strip()]
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if not (pa.types.is_string(lines.type) or pa.types.is_large_string(lines.type)):
        lines = lines.cast(pa.large_string())
    n = len(lines)
    parts = max(1, min(threads or os.cpu_count() or 1, n // _ROWS_A_THREAD))
    bounds = [n * k // parts for k in range(parts + 1)]
    if parts == 1:
        return _build_part(lines, mode, need_time)
    with ThreadPoolExecutor(parts) as pool:
        done = list(pool.map(lambda k: _build_part(lines.slice(bounds[k], bounds[k + 1] - bounds[k]), mode,
                                                   need_time), range(parts)))
    return tuple(np.concatenate(columns) for columns in zip(*done, strict=True))  # type: ignore[return-value]


#: Rows below which a chunk is keyed on one thread.
_ROWS_A_THREAD = 20_000


def _build_part(lines: Any, mode: int, need_time: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`build_keys` of a slice of lines (a string or large string array), on this thread."""
    import pyarrow as pa

    n = len(lines)
    validity, offset_buf, data_buf = lines.buffers()
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(offset_buf, width)[lines.offset:lines.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    valid = np.ones(n, np.bool_) if validity is None else ~lines.is_null().to_numpy(zero_copy_only=False)
    status = np.zeros(n, np.int8)
    time_ms = np.full(n, NO_TIME, np.int64)
    hi, lo = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    ends = np.zeros(n, np.int64)
    bodies = np.full((n, 2), -1, np.int64)
    longest = int(np.diff(offsets).max()) if n else 0
    tokens = np.zeros((longest + 2, _TOKEN_FIELDS), np.int64)
    order = np.zeros(longest + 2, np.int64)
    stack = np.zeros(_MAX_DEPTH, np.int64)
    frames = np.zeros((_MAX_DEPTH, 3), np.int64)
    out = np.empty(max(1 << 16, int(offsets[-1] - offsets[0]) // 2 if n else 0), np.uint8)
    row = 0
    while row < n:
        row = _build(data, offsets, valid, row, mode, need_time, tables().as_tuple(), out, ends, bodies,
                     status, time_ms, hi, lo, tokens, stack, order, frames)
        if row < n:
            grown = np.empty(len(out) * 2 + int(offsets[row + 1] - offsets[row]) * 2, np.uint8)
            grown[:len(out)] = out
            out = grown
    _digests(out, ends, bodies, status, hi, lo)
    return hi, lo, time_ms, status


def _digests(out: np.ndarray, ends: np.ndarray, bodies: np.ndarray, status: np.ndarray, hi: np.ndarray,
             lo: np.ndarray) -> None:
    """The digest halves of the keys whose span in ``bodies`` (canonical JSON) stands for the hex of its
    16-byte BLAKE2b (``dedup.canonical.digest``), into ``hi`` and ``lo``."""
    rows = np.flatnonzero((status == KEYED) & (bodies[:, 0] >= 0))
    view = memoryview(out)
    md5, blake2b = hashlib.md5, hashlib.blake2b
    found = []
    starts = np.where(rows > 0, ends[rows - 1], 0)
    spans = zip(starts.tolist(), ends[rows].tolist(), bodies[rows, 0].tolist(), bodies[rows, 1].tolist(),
                strict=True)
    for start, end, body_start, body_end in spans:
        key = md5(view[start:body_start])
        key.update(blake2b(view[body_start:body_end], digest_size=16).hexdigest().encode())
        key.update(view[body_end:end])
        found.append(key.digest())
    digests = np.frombuffer(b"".join(found), np.uint64).reshape(-1, 2)
    # The digest as a little-endian 128-bit integer: low word first.
    hi[rows] = (digests[:, 1] >> np.uint64(1)).astype(np.int64)
    lo[rows] = (digests[:, 0] & np.uint64(MASK63)).astype(np.int64)
