"""Traces on disk: JSONL (one envelope a line), a ground-truth sidecar, readable CSV.

Bring your own trace: :func:`read_jsonl` also accepts what an SQS dump holds:
a Lambda SQS record (``body``), a boto3 ``receive_message`` message
(``Body``), a Lambda batch (``Records``, each record on its own), the output
of ``aws sqs receive-message`` (``Messages``, pretty-printed JSON documents one
after another, as a shell loop appends them), a JSON array of any of these, or
a message body as a JSON string. Files ending in ``.gz`` (or starting with the
gzip magic bytes) are decompressed. A message that is none of these is
rejected with its line (and record) number and the reason
(``errors="raise"``, the default), or set aside in ``Trace.rejected``
(``errors="collect"``); none is dropped silently.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from dedup.errors import BadMessageError
from dedup.keys import NoKey, epoch_ms
from dedup.traces.catalogue import KINDS
from dedup.traces.trace import TRUTH_COLUMNS, Trace, progress_bar

Errors = Literal["raise", "collect"]
#: Lists of messages a JSON document may hold: a Lambda batch, ``aws sqs receive-message`` output.
_MESSAGE_LISTS = ("Records", "Messages")
_GZIP_MAGIC = b"\x1f\x8b"


def truth_path(path: str | Path) -> Path:
    """Where the ground truth of ``path`` (``NAME.jsonl``) lives: ``NAME.truth.csv``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".gz").removesuffix(".jsonl") + ".truth.csv")


def write_jsonl(trace: Trace, path: str | Path, *, truth: bool = True, progress: bool = False) -> Path | None:
    """Write one envelope a line, in arrival order; with ``truth``, the sidecar too (returned)."""
    path = Path(path)
    bar = progress_bar(len(trace), progress, f"writing {path.name}")
    with path.open("w", encoding="utf-8") as out:
        for i, envelope in enumerate(trace.envelopes()):
            out.write(json.dumps(envelope, ensure_ascii=False, separators=(",", ":")) + "\n")
            if i % 10_000 == 9_999:
                bar.update(10_000)
    bar.close()
    if not (truth and trace.has_truth):
        return None
    sidecar = truth_path(path)
    trace.frame[["arrival_ms", *TRUTH_COLUMNS]].to_csv(sidecar, index_label="line")
    return sidecar


def write_csv(trace: Trace, path: str | Path) -> None:
    """Write the readable table (:meth:`Trace.table`) as CSV."""
    trace.table().to_csv(path, index=False)


def read_jsonl(path: str | Path, *, errors: Errors = "raise", truth: bool | None = None) -> Trace:
    """Load envelopes (or SQS messages wrapping them) from a JSONL file or SQS dump, in file order.

    A message's arrival time is the SQS ``SentTimestamp`` or else the envelope
    ``time``, made non-decreasing in file order (a dump is in receive order,
    and SQS does not record when it delivered a message again); which one was
    used is in ``trace.frame.attrs["arrival_from"]``. The truth sidecar, when
    present (or ``truth=True``), supplies exact arrival times and the ground
    truth. ``errors="collect"`` keeps going past bad lines.
    """
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    path = Path(path)
    envelopes: list[dict[str, Any]] = []
    stamps: list[float] = []
    sent: list[bool] = []
    message_ids: list[str | None] = []
    receive_counts: list[int] = []
    rejected: list[tuple[str, str]] = []

    def reject(where: str, reason: str) -> None:
        if errors == "raise":
            raise BadMessageError(f"{path.name}:{where}", reason)
        rejected.append((where, reason))

    for lineno, obj in _documents(path, reject):
        if isinstance(obj, list):
            items = [(f"{lineno} item {k}", r) for k, r in enumerate(obj, start=1)]
        elif isinstance(obj, Mapping) and any(isinstance(obj.get(f), list) for f in _MESSAGE_LISTS):
            field = next(f for f in _MESSAGE_LISTS if isinstance(obj.get(f), list))
            items = [(f"{lineno} record {k}", r) for k, r in enumerate(obj[field], start=1)]
        else:
            items = [(str(lineno), obj)]
        for where, item in items:
            try:
                envelope, stamp, message_id, count, from_sqs = _message(item)
            except ValueError as exc:
                reject(where, str(exc))
                continue
            envelopes.append(envelope)
            stamps.append(stamp)
            sent.append(from_sqs)
            message_ids.append(message_id)
            receive_counts.append(count)
    sidecar = truth_path(path)
    if truth or (truth is None and sidecar.exists()):
        frame = _read_truth(sidecar, len(envelopes))
        frame.attrs["arrival_from"] = "truth sidecar"
    else:
        arrival = np.maximum.accumulate(np.asarray(stamps, dtype=np.float64)) if stamps else np.zeros(0)
        frame = pd.DataFrame({"arrival_ms": arrival.astype(np.int64)})
        if any(m is not None for m in message_ids):
            frame["message_id"] = message_ids
        if any(c > 0 for c in receive_counts):
            frame["receive_count"] = receive_counts
        frame.attrs["arrival_from"] = ("SentTimestamp" if all(sent) else "envelope time" if not any(sent)
                                       else "SentTimestamp where present, else envelope time")
    return Trace(frame, envelopes=envelopes, rejected=rejected)


def _documents(path: Path, reject: Any) -> Iterator[tuple[int, Any]]:
    """Every JSON value in the file with the line it starts on: one a line, or pretty-printed ones in a row.

    A value that does not parse is rejected with its line, and reading goes on
    at the next line.
    """
    with path.open("rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if gzipped or path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    decoder = json.JSONDecoder()
    pos, line = 0, 1
    while True:
        start = _skip_blank(text, pos)
        line += text.count("\n", pos, start)
        if start >= len(text):
            return
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            reject(str(line), f"JSON error: {exc.msg} (column {start - text.rfind(chr(10), 0, start)})")
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
        else:
            yield line, obj
        line += text.count("\n", start, end)
        pos = end


def _skip_blank(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _message(obj: Any) -> tuple[dict[str, Any], float, str | None, int, bool]:
    """The envelope one message carries, its time (epoch ms), SQS message id, receive count, and
    whether the time is the SQS ``SentTimestamp``."""
    if isinstance(obj, str):  # a message body, itself JSON text
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise ValueError(f"a JSON string that is not JSON: {exc}") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"a message must be a JSON object, not a {type(obj).__name__}")
    body_field = "body" if "body" in obj else "Body" if "Body" in obj else None
    if body_field is None:
        _check_envelope(obj)
        return dict(obj), _envelope_ms(obj), None, 0, False
    # An SQS message: a Lambda record (body, attributes) or boto3's receive_message (Body, Attributes).
    message_id = obj.get("messageId") or obj.get("MessageId")
    where = f" (messageId {message_id})" if message_id else ""
    body = obj[body_field]
    if not isinstance(body, str):
        raise ValueError(f"SQS {body_field}{where} must be a JSON string, not a {type(body).__name__}")
    try:
        envelope = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"SQS {body_field}{where} is not JSON: {exc}") from None
    _check_envelope(envelope)
    attributes = obj.get("attributes") or obj.get("Attributes") or {}
    sent = attributes.get("SentTimestamp")
    stamp = float(sent) if sent is not None else _envelope_ms(envelope)
    return envelope, stamp, message_id, int(attributes.get("ApproximateReceiveCount", 0)), sent is not None


def _check_envelope(obj: Any) -> None:
    if not isinstance(obj, Mapping):
        raise ValueError(f"the message is a JSON {type(obj).__name__}, not an EventBridge envelope")
    missing = [f for f in ("source", "detail") if f not in obj]
    if missing:
        raise ValueError(f"not an EventBridge envelope: no {' or '.join(repr(m) for m in missing)}")


def _envelope_ms(envelope: Mapping[str, Any]) -> float:
    try:
        return float(epoch_ms(envelope.get("time")))
    except NoKey as exc:
        raise ValueError(f"envelope 'time' is unusable: {exc.reason}") from None


def _read_truth(sidecar: Path, lines: int) -> pd.DataFrame:
    if not sidecar.exists():
        raise FileNotFoundError(f"no ground truth at {sidecar}")
    frame = pd.read_csv(sidecar, index_col="line")
    missing = [c for c in ("arrival_ms", *TRUTH_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{sidecar} lacks column(s) {', '.join(missing)}")
    if len(frame) != lines:
        raise ValueError(f"{sidecar} has {len(frame)} rows for {lines} envelopes")
    frame["kind"] = pd.Categorical(frame["kind"], categories=KINDS)
    if frame["kind"].isna().any():
        raise ValueError(f"{sidecar}: kind must be one of {', '.join(KINDS)}")
    return frame.reset_index(drop=True)
