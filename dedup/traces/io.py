"""Traces on disk: JSONL (one envelope a line), a ground-truth sidecar, readable CSV.

Bring your own trace: :func:`read_jsonl` also accepts what an SQS dump holds,
a line per received message: a Lambda SQS record (``body``), a boto3
``receive_message`` message (``Body``), a Lambda batch (``Records``, each
record on its own), or a message body as a JSON string. A message that is
none of these is rejected with its line (and record) number and the reason
(``errors="raise"``, the default), or set aside in ``Trace.rejected``
(``errors="collect"``); none is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from dedup.errors import BadMessageError
from dedup.keys import NoKey, epoch_ms
from dedup.traces.catalogue import KINDS
from dedup.traces.trace import TRUTH_COLUMNS, Trace, progress_bar

Errors = Literal["raise", "collect"]


def truth_path(path: str | Path) -> Path:
    """Where the ground truth of ``path`` (``NAME.jsonl``) lives: ``NAME.truth.csv``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".truth.csv")


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
    """Load envelopes (or SQS records wrapping them) from a JSONL file, in file order.

    A line's arrival time is the SQS ``SentTimestamp`` or else the envelope
    ``time``, made non-decreasing in file order (a dump is in receive order,
    and SQS does not record when it delivered a message again). The truth
    sidecar, when present (or ``truth=True``), supplies exact arrival times and
    the ground truth. ``errors="collect"`` keeps going past bad lines.
    """
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    path = Path(path)
    envelopes: list[dict[str, Any]] = []
    stamps: list[float] = []
    message_ids: list[str | None] = []
    receive_counts: list[int] = []
    rejected: list[tuple[str, str]] = []

    def reject(where: str, reason: str) -> None:
        if errors == "raise":
            raise BadMessageError(f"{path.name}:{where}", reason)
        rejected.append((where, reason))

    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                reject(str(lineno), f"JSON error: {exc}")
                continue
            if isinstance(obj, Mapping) and isinstance(obj.get("Records"), list):  # a Lambda batch
                items = [(f"{lineno} record {k}", r) for k, r in enumerate(obj["Records"], start=1)]
            else:
                items = [(str(lineno), obj)]
            for where, item in items:
                try:
                    envelope, stamp, message_id, count = _message(item)
                except ValueError as exc:
                    reject(where, str(exc))
                    continue
                envelopes.append(envelope)
                stamps.append(stamp)
                message_ids.append(message_id)
                receive_counts.append(count)
    sidecar = truth_path(path)
    if truth or (truth is None and sidecar.exists()):
        frame = _read_truth(sidecar, len(envelopes))
    else:
        arrival = np.maximum.accumulate(np.asarray(stamps, dtype=np.float64)) if stamps else np.zeros(0)
        frame = pd.DataFrame({"arrival_ms": arrival.astype(np.int64)})
        if any(m is not None for m in message_ids):
            frame["message_id"] = message_ids
        if any(c > 0 for c in receive_counts):
            frame["receive_count"] = receive_counts
    return Trace(frame, envelopes=envelopes, rejected=rejected)


def _message(obj: Any) -> tuple[dict[str, Any], float, str | None, int]:
    """The envelope one message carries, with its time (epoch ms), SQS message id and receive count."""
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
        return dict(obj), _envelope_ms(obj), None, 0
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
    return envelope, stamp, message_id, int(attributes.get("ApproximateReceiveCount", 0))


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
