"""Canonical JSON (RFC 8785, JCS) and timestamp normalisation: what keys are built from.

A key must not change when a producer re-serialises an event, so fingerprints
hash the JSON Canonicalization Scheme form of a value: object members sorted by
their UTF-16 code units, no whitespace, strings escaped minimally, and numbers
written by *value* in the ECMAScript form (``1`` and ``1.0`` are both ``1``,
``1e-7`` is ``1e-7``, ``1e21`` is ``1e+21``). A Java producer's doubles, a
JavaScript ``JSON.stringify`` and Python's ``json.dumps`` then agree.

One deliberate departure: integers beyond 2**53 are written exactly, as their
decimal digits, where strict JCS would first round them to the nearest double.
Rounding would make distinct 64-bit ids (``9007199254740993`` and
``9007199254740992``) one key and drop an event; writing them exactly means a
re-publisher that rounds such an integer through a double keys differently (a
duplicate processed again, never an event lost). Integral *floats* are written
by value as JCS says (``2.0**60`` is ``1152921504606847000``), so an integer
and a float beyond 2**53 are different keys.

Non-finite numbers (``NaN``, ``Infinity``, which Python's JSON parser accepts)
have no JCS form; they are written as ``NaN`` / ``Infinity`` / ``-Infinity`` so
that such a payload still keys (and keys identically when re-sent).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TimestampError", "canonical_json", "digest", "digests", "epoch_ms", "fingerprint"]

_INT_EXACT = 2**53
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MS = _dt.timedelta(milliseconds=1)
#: Below this magnitude an epoch number is seconds (until the year 5138); above, milliseconds.
_SECONDS_BELOW = 100_000_000_000
# An empty BLAKE2b hash per digest size, copied for each text (see digests).
_BLANK_BLAKE2B: dict[int, Any] = {}
_encode_string = json.JSONEncoder(ensure_ascii=False).encode


class TimestampError(ValueError):
    """A value is not a timestamp: ``str(error)`` says why."""


def canonical_json(value: Any) -> str:
    """The RFC 8785 (JCS) text of a JSON value (integers beyond 2**53 kept exact; see module doc)."""
    if _is_plain(value):
        return _encode(value)
    plain = _plain(value)
    if plain is not _SLOW:
        return _encode(plain)
    return "".join(_write(value, []))


def digest(text: str, size: int = 16) -> bytes:
    """A fixed-size BLAKE2b digest of ``text``; lone surrogates from JSON are tolerated."""
    return digests((text,), size)[0]


def digests(texts: Iterable[str], size: int = 16) -> list[bytes]:
    """:func:`digest` of each text, in one loop (a store hashes a batch of keys per call).

    Each hash is a copy of a prepared one: a third cheaper than building it,
    which parses the digest size and the other parameters every time.
    """
    blank = _BLANK_BLAKE2B.get(size) or _BLANK_BLAKE2B.setdefault(size, hashlib.blake2b(digest_size=size))
    encode = str.encode  # a TypeError for anything but a string, even one with an encode method
    out = []
    for text in texts:
        h = blank.copy()
        h.update(encode(text, "utf-8", "surrogatepass"))
        out.append(h.digest())
    return out


def fingerprint(value: Any) -> str:
    """A short stable hex fingerprint of a JSON value's canonical form (payload validation)."""
    return digest(canonical_json(value), 8).hex()


def epoch_ms(value: Any) -> int:
    """Normalise a timestamp to whole epoch milliseconds (sub-millisecond parts are floored).

    Accepted: epoch seconds or milliseconds as a JSON number or as a numeric
    string (``1795942800``, ``1795942800.5``, ``"1795942800123"``; a magnitude
    below 10**11 is seconds), and ISO-8601 text with ``Z``, an offset, or none
    (taken as UTC). Genesys sends ``eventTime`` as epoch milliseconds in
    conversation detail events and as ISO text elsewhere; all forms of one
    instant give one number. Raises :class:`TimestampError` otherwise.
    """
    if isinstance(value, bool):
        raise TimestampError(f"timestamp is a boolean: {value!r}")
    if isinstance(value, int):
        return value * 1000 if abs(value) < _SECONDS_BELOW else value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TimestampError(f"timestamp is not finite: {value!r}")
        return _number_ms(decimal.Decimal(repr(value)))
    if isinstance(value, str):
        text = value.strip()
        if text[:1].isdigit() or (text[:1] in "+-" and text[1:2].isdigit()):
            try:
                number = decimal.Decimal(text)
            except decimal.InvalidOperation:
                number = None
            if number is not None and number.is_finite():
                return _number_ms(number)
        return _iso_ms(value, text)
    kind = "null" if value is None else "an object" if isinstance(value, Mapping) else type(value).__name__
    raise TimestampError(f"timestamp is {kind}, not a number or text")


def _number_ms(number: decimal.Decimal) -> int:
    ms = number * 1000 if abs(number) < _SECONDS_BELOW else number
    return int(ms.to_integral_value(rounding=decimal.ROUND_FLOOR))


def _iso_ms(original: str, text: str) -> int:
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        clipped = original if len(original) <= 80 else original[:80] + "…"
        raise TimestampError(f"timestamp is not ISO-8601 or epoch s/ms: {clipped!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return (parsed - _EPOCH) // _MS


# ---- the JCS writer ----------------------------------------------------------------------

_SLOW = object()
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode


def _is_plain(value: Any) -> bool:
    """Whether ``json.dumps`` writes ``value`` as JCS as it is: JSON types, no floats, BMP member names.

    The common case (ids, texts, integers), checked by exact type for speed.
    """
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or (not k.isascii() and max(k) > "\uffff"):
                return False
            vk = type(v)
            if not (vk is str or vk is int or vk is bool or v is None or _is_plain(v)):
                return False
        return True
    if kind is list:
        for v in value:
            vk = type(v)
            if not (vk is str or vk is int or vk is bool or v is None or _is_plain(v)):
                return False
        return True
    return kind is str or kind is int or kind is bool or value is None


def _plain(value: Any) -> Any:
    """``value`` if ``json.dumps`` already writes it as JCS, an equivalent that it does, or ``_SLOW``.

    ``json.dumps`` matches JCS for strings, integers, ASCII / BMP member names and
    floats it writes without an exponent and that are not integral; integral
    floats become ints. Anything else (exponent-form floats, non-finite numbers,
    names outside the BMP, whose UTF-16 order differs) takes the full writer.
    """
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return _SLOW
        if value.is_integer():
            return int(value) if abs(value) < _INT_EXACT else _SLOW
        return value if 1e-4 <= abs(value) < 1e16 else _SLOW
    if isinstance(value, Mapping):
        out = None
        for i, (k, v) in enumerate(value.items()):
            if not isinstance(k, str) or (not k.isascii() and max(k) > "\uffff"):
                return _SLOW
            p = _plain(v)
            if p is _SLOW:
                return _SLOW
            if p is not v and out is None:
                out = dict(list(value.items())[:i])
            if out is not None:
                out[k] = p
        return value if out is None else out
    if isinstance(value, list | tuple):
        items = None
        for i, v in enumerate(value):
            p = _plain(v)
            if p is _SLOW:
                return _SLOW
            if p is not v and items is None:
                items = list(value[:i])
            if items is not None:
                items.append(p)
        return value if items is None else items
    return str(value)  # not JSON (a datetime, a set): its text, as json.dumps(default=str) would


def _write(value: Any, out: list[str]) -> list[str]:
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None or isinstance(value, bool):
        out.append("null" if value is None else "true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_es_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for n, k in enumerate(sorted(value, key=_utf16)):
            if n:
                out.append(",")
            out.append(_encode_string(str(k)))
            out.append(":")
            _write(value[k], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for n, v in enumerate(value):
            if n:
                out.append(",")
            _write(v, out)
        out.append("]")
    else:
        out.append(_encode_string(str(value)))
    return out


def _utf16(name: Any) -> bytes:
    return str(name).encode("utf-16-be", "surrogatepass")


def _es_number(value: float) -> str:
    """A double as ECMAScript ``Number.prototype.toString`` writes it (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # value = 0.DIGITS * 10**point
    point = len(whole.lstrip("0")) if whole.strip("0") else -(len(frac) - len(frac.lstrip("0")))
    point += int(exp_text or 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if exponent > 0 else '-'}{abs(exponent)}"
