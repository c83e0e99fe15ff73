"""The vectorised trace generator: logical events first, then the duplicate processes.

Everything is built a column at a time with numpy (no per-event Python), so a
trace of millions of events is generated in seconds; envelopes are rendered
only when asked for (:mod:`dedup.traces.render`).

1. Contact-centre activity: Genesys conversations (voice with transcription,
   chat) as topic sequences with realistic gaps, with the agent notifications
   they cause (routing status, activity, conversation summaries), the queue's
   conversation snapshots and analytics metrics; audit, presence, queue
   observation and flow notifications; NICE contacts as state sequences with
   their agents' states and chat messages, and agent login sessions; all
   arriving with a daily profile.
2. Publishing: each logical event is published once (plus producer
   re-publishes) and each published envelope is delivered once (plus SQS
   redeliveries); rare late copies arrive minutes to a day later.
3. The first ``n_events`` arrivals form the trace, in arrival order, with the
   ground truth of every row.

The trace is generated in epochs (:func:`generate_chunks`): consecutive spans
of the daily profile holding about :data:`EPOCH_ROWS` messages, each drawn from
its own random stream (``seed``, ``n_events``, epoch), with ids numbered on
from the epochs before it, so that a trace of 100M events is written with the
memory of one epoch. What an epoch's activity causes after its end (a
conversation's later events, retries, redeliveries, late copies) is carried
into the next epoch, so the chunks come out in arrival order. A trace of up to
about :data:`EPOCH_ROWS` messages is one epoch, and :func:`generate_frame` is
the chunks concatenated: one code path at every size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd

from dedup.traces.catalogue import (
    ACTIVITY_PRESENCE_OFFSET,
    AGENT_POOL,
    AUDIT_ENTITIES,
    EVENT_NAMES,
    FIRST_NICE,
    FLOWS,
    KINDS,
    MEDIA,
    NICE_AGENT_STATES,
    NICE_STATES,
    PLATFORMS,
    QUEUES,
    ROUTING_STATUSES,
    Event,
)
from dedup.traces.config import TraceConfig
from dedup.traces.ids import Namespace, pick

_HOUR_MS = 3_600_000.0
_DAY_MS = 86_400_000
_VOICE, _CHAT, _NO_MEDIA = MEDIA.index("voice"), MEDIA.index("chat"), MEDIA.index("none")
_ORIGINAL, _DELIVERY, _PUBLISH, _LATE = range(4)
_MAX_REDELIVERIES = 5
# Medians (s) and log-normal sigmas of the durations that space a conversation's events.
_TALK_VOICE_S, _TALK_CHAT_S, _TALK_SIGMA = 240.0, 480.0, 0.7
_PUBLISH_LATENCY_MS, _DELIVERY_LATENCY_MS = 300.0, 120.0
#: Messages an epoch of the generator aims at (see :func:`generate_chunks`): the frames and arrays held
#: at once are a small multiple of this, whatever ``n_events``.
EPOCH_ROWS = 1_000_000
#: How much more than ``n_events`` the epochs draw (the last's final messages wait for an epoch not drawn;
#: when the draw falls short all the same, one more epoch is drawn).
_MARGIN = 1.05
# Random streams: an epoch's, and a day's NICE agent logins (drawn per day, whichever epoch holds it).
_EPOCH_STREAM, _SESSION_STREAM = 0, 1

#: Column order and dtypes of a generated trace frame (documented in data/README.md).
FRAME_COLUMNS = (
    "arrival_ms", "logical_id", "kind", "original_arrival_ms", "publish_no", "envelope_time_ms",
    "platform", "event", "media", "entity", "participant", "item", "event_time_ms",
)  # fmt: skip


class _Columns:
    """Equal-length numpy columns of a dataclass: joined and selected row-wise, field by field."""

    @classmethod
    def concat(cls, parts: list[Self]) -> Self:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def take(self, which: np.ndarray) -> Self:
        return type(self)(*(getattr(self, f)[which] for f in self.__dataclass_fields__))


@dataclass
class _Events(_Columns):
    """Logical events as columns (one row per distinct event)."""

    event: np.ndarray
    entity: np.ndarray
    participant: np.ndarray
    item: np.ndarray
    media: np.ndarray
    time_ms: np.ndarray

    @classmethod
    def empty(cls) -> _Events:
        return cls(np.empty(0, np.int8), *(np.empty(0, np.int64) for _ in range(3)), np.empty(0, np.int8),
                   np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.event)


class _Counters:
    """Next free number per kind of id (conversation, contact, audit, ...), so epochs never reuse one."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def take(self, name: str, count: int) -> np.ndarray:
        """The next ``count`` numbers of ``name``."""
        first = self._next.get(name, 0)
        self._next[name] = first + count
        return np.arange(first, first + count, dtype=np.int64)


class _Timeline:
    """Profile days to epoch ms: a profile day is a day's worth of traffic at the mean rate.

    Every 24 hours hold one, but an hour at the morning peak holds more of it
    than one at night. Covers profile days ``[0, days]`` from the trace's start.
    """

    def __init__(self, cfg: TraceConfig, days: float) -> None:
        self.start_ms = cfg.start_s * 1000.0
        hours = (int(np.ceil(days)) + 2) * 24
        hour_of_day = (int(self.start_ms // _HOUR_MS) + np.arange(hours)) % 24
        weights = np.asarray(cfg.profile, dtype=float)
        self.knots_ms = self.start_ms + np.arange(hours + 1) * _HOUR_MS
        self.cumulative = np.concatenate([[0.0], np.cumsum(weights[hour_of_day] / weights.mean() / 24)])

    def times(self, days: np.ndarray) -> np.ndarray:
        """The epoch ms (floats) at profile days ``days``."""
        return np.interp(days, self.cumulative, self.knots_ms)

    def ms(self, days: float) -> int:
        """The whole epoch ms at which profile day ``days`` begins (an epoch's boundary)."""
        return int(np.floor(self.times(np.array([days]))[0]))


def generate_frame(config: TraceConfig) -> pd.DataFrame:
    """The trace frame of ``config``: ``n_events`` rows in arrival order with ground truth.

    The chunks of :func:`generate_chunks` concatenated (a trace of up to about
    :data:`EPOCH_ROWS` messages is usually one chunk, returned as it is).
    """
    chunks = list(generate_chunks(config))
    if len(chunks) == 1:
        return chunks[0]
    return pd.concat(chunks, ignore_index=True) if chunks else _frame(_Rows.empty())


def generate_chunks(config: TraceConfig) -> Iterator[pd.DataFrame]:
    """The trace of ``config`` as consecutive frames in arrival order (:func:`generate_frame`'s rows).

    Epoch ``e`` draws the activity of profile days ``[e * L, (e + 1) * L)`` from
    the stream ``(seed, n_events, e)``, ``L`` such that equal epochs of at most
    :data:`EPOCH_ROWS` messages hold ``n_events`` with a margin. Its logical events
    that happen after the epoch's end join the next epoch's; its messages that
    arrive after it wait for the next epoch's; the rest are final, since nothing
    later can arrive before the epoch's end, and are yielded in arrival order.
    Ids (conversations, contacts, items) are numbered on across epochs, and
    logical ids by their original's arrival over the whole trace. So what is
    held at once is an epoch and what it carries over, not the trace.
    """
    n = config.n_events
    rate = max(_expected_rows_per_day(config), 1.0)
    drawn = n * _MARGIN  # split into equal epochs: the last is not mostly thrown away
    epoch_days = drawn / max(1, int(np.ceil(drawn / EPOCH_ROWS))) / rate
    counters = _Counters()
    carried_events = _Events.empty()
    pending = _Rows.empty()
    emitted = epoch = next_id = 0
    while emitted < n:
        lo_days, hi_days = epoch * epoch_days, (epoch + 1) * epoch_days
        timeline = _Timeline(config, hi_days)
        end_ms = timeline.ms(hi_days)
        rng = np.random.default_rng([config.seed, n, _EPOCH_STREAM, epoch])
        events = _activity(rng, config, timeline, lo_days, hi_days, counters)
        events = _Events.concat([carried_events, events])
        events.time_ms = _distinct_times(events, events.time_ms)
        later = events.time_ms >= end_ms
        carried_events, events = events.take(later), events.take(~later)
        rows = _Rows.concat([pending, _publish_and_deliver(rng, config, events, counters)])
        order = np.argsort(rows.arrival_ms, kind="stable")
        ready = int(np.searchsorted(rows.arrival_ms, end_ms, sorter=order))
        take = min(ready, n - emitted)
        pending = rows.take(order[ready:])
        if take:
            chunk = rows.take(order[:take])
            next_id = _number(chunk, pending, next_id)
            yield _frame(chunk)
            emitted += take
        epoch += 1


def _expected_rows_per_day(cfg: TraceConfig) -> float:
    """Roughly how many messages a day of ``cfg`` produces, to size the epochs."""
    ab = cfg.abandon_p
    talk_mean_s = _TALK_VOICE_S * np.exp(_TALK_SIGMA**2 / 2)
    chat_talk_mean_s = _TALK_CHAT_S * np.exp(_TALK_SIGMA**2 / 2)
    per_conversation = 8 + (1 - ab) * 11 + cfg.attribute_updates_mean
    per_conversation += cfg.voice_share * (1 - ab) * talk_mean_s / cfg.utterance_gap_s
    per_contact = 3 + ab * 2 + (1 - ab) * 8
    per_contact += (1 - cfg.voice_share) * (1 - ab) * chat_talk_mean_s / cfg.chat_message_gap_s
    nice = {"genesys": 0.0, "nice": 1.0, "mixed": cfg.nice_share}[cfg.source]
    rate = cfg.conversations_per_day * ((1 - nice) * per_conversation + nice * per_contact)
    if cfg.source != "nice":
        rate += cfg.audits_per_day + 2 * cfg.presence_changes_per_day
        rate += cfg.queue_observations_per_day + 2 * cfg.flow_publishes_per_day
    if cfg.source != "genesys":
        rate += 2 * AGENT_POOL
    d = cfg.duplicates
    copies = (1 + d.publish_p / (1 - d.publish_p)) * (1 + d.delivery_p / (1 - d.delivery_p)) + d.late_p
    return rate * copies


# ---- 1. activity -------------------------------------------------------------


def _activity(rng: np.random.Generator, cfg: TraceConfig, timeline: _Timeline, lo_days: float,
              hi_days: float, counters: _Counters) -> _Events:
    """The activity starting in profile days ``[lo_days, hi_days)``, as logical events (ms times floored;
    conversations and contacts run on past ``hi_days``)."""
    days = hi_days - lo_days
    nice = {"genesys": 0.0, "nice": 1.0, "mixed": cfg.nice_share}[cfg.source]

    def arrivals(count: int) -> np.ndarray:
        """``count`` sorted times (epoch ms) spread over the epoch's profile days."""
        return timeline.times(np.sort(rng.uniform(lo_days, hi_days, count)))

    parts = []
    if nice < 1.0:
        count = rng.poisson(cfg.conversations_per_day * (1 - nice) * days)
        parts.append(_conversations(rng, cfg, arrivals(count), counters))
        for event, per_day, pool in (
            (Event.AUDIT, cfg.audits_per_day, AUDIT_ENTITIES),
            (Event.PRESENCE, cfg.presence_changes_per_day, cfg.agents),
            (Event.QUEUE_OBSERVATIONS, cfg.queue_observations_per_day, QUEUES),
        ):
            k = rng.poisson(per_day * days)
            parts.append(_Events(
                np.full(k, event, np.int8), rng.integers(0, pool, k), np.full(k, -1),
                counters.take(event.name, k), np.full(k, _NO_MEDIA, np.int8), arrivals(k),
            ))
            if event == Event.PRESENCE:  # each presence change is also an activity notification
                p = parts[-1]
                parts.append(_Events(np.full(k, Event.ACTIVITY, np.int8), p.entity, p.participant,
                                     p.item + ACTIVITY_PRESENCE_OFFSET, p.media,
                                     p.time_ms + rng.uniform(5, 60, k)))
        k = rng.poisson(cfg.flow_publishes_per_day * days)
        parts.append(_flow_publishes(rng, arrivals(k), counters))
    if nice > 0.0:
        count = rng.poisson(cfg.conversations_per_day * nice * days)
        parts.append(_contacts(rng, cfg, arrivals(count), counters))
        parts.append(_agent_sessions(cfg, timeline.ms(lo_days), timeline.ms(hi_days)))
    events = _Events.concat(parts)
    events.time_ms = np.floor(events.time_ms).astype(np.int64)
    return events


def _lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: float, size: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(size))


def _phases(rng: np.random.Generator, cfg: TraceConfig, n: int, *, ivr_voice_s: float, ivr_chat_s: float
            ) -> tuple[np.ndarray, ...]:
    """Per contact of either platform: voice?, answered?, then the IVR, queue wait, talk and wrap-up
    durations in ms (lognormal; only the IVR's median differs between the platforms)."""
    voice = rng.random(n) < cfg.voice_share
    answered = rng.random(n) >= cfg.abandon_p
    ivr = np.maximum(_lognormal(rng, np.where(voice, ivr_voice_s, ivr_chat_s), 0.5, n), 1.0) * 1000
    wait = np.clip(_lognormal(rng, 40.0, 1.0, n), 1.0, 1800.0) * 1000
    talk = np.clip(_lognormal(rng, np.where(voice, _TALK_VOICE_S, _TALK_CHAT_S), _TALK_SIGMA, n),
                   10.0, 7200.0) * 1000
    acw = np.clip(_lognormal(rng, 30.0, 0.6, n), 1.0, 900.0) * 1000
    return voice, answered, ivr, wait, talk, acw


def _conversations(rng: np.random.Generator, cfg: TraceConfig, start_ms: np.ndarray, counters: _Counters
                   ) -> _Events:
    """Genesys conversations: detail topics, participant-data updates and voice transcription."""
    n = len(start_ms)
    conv = np.arange(n)  # positions in this batch; ``ids`` numbers them across the trace
    ids = counters.take("conversation", n)
    voice, answered, ivr, wait, talk, acw = _phases(rng, cfg, n, ivr_voice_s=35.0, ivr_chat_s=8.0)
    t_flow_start = start_ms + rng.uniform(50, 400, n)
    t_flow_end = start_ms + ivr
    t_acd_start = t_flow_end + rng.uniform(50, 300, n)
    t_acd_end = t_acd_start + wait
    t_user_start = t_acd_end + rng.uniform(200, 1500, n)
    t_user_end = t_user_start + talk
    t_customer_end = np.where(answered, t_user_end + rng.uniform(50, 1500, n),
                              t_acd_end + rng.uniform(50, 500, n))
    media = np.where(voice, _VOICE, _CHAT).astype(np.int8)
    # (event, time, which conversations, participant role: 0 customer, 1 ACD, 2 agent)
    fixed = [
        (Event.CUSTOMER_START, start_ms, None, 0),
        (Event.FLOW_START, t_flow_start, None, 0),
        (Event.FLOW_END, t_flow_end, None, 0),
        (Event.ACD_START, t_acd_start, None, 1),
        (Event.ACD_END, t_acd_end, None, 1),
        (Event.USER_START, t_user_start, answered, 2),
        (Event.USER_END, t_user_end, answered, 2),
        (Event.CUSTOMER_END, t_customer_end, None, 0),
        (Event.ACW, t_user_end + acw, answered, 2),
    ]
    parts = []
    for event, times, mask, role in fixed:
        idx = conv if mask is None else conv[mask]
        # An ACD end's item says how the wait ended: 0 answered, 1 abandoned.
        item = (~answered[idx]).astype(np.int64) if event == Event.ACD_END else np.full(len(idx), -1)
        parts.append(_Events(np.full(len(idx), event, np.int8), ids[idx], ids[idx] * 4 + role, item,
                             media[idx], times[idx]))
    # Participant-data updates: same topic and participant, each with its own eventTime.
    idx = np.repeat(conv, rng.poisson(cfg.attribute_updates_mean, n))
    times = t_flow_start[idx] + rng.random(len(idx)) * (t_customer_end[idx] - t_flow_start[idx])
    parts.append(_Events(np.full(len(idx), Event.ATTRIBUTES, np.int8), ids[idx], ids[idx] * 4,
                         counters.take("attributes", len(idx)), media[idx], times))
    # Transcription utterances of answered voice calls, spread over the talk time.
    per_call = np.where(voice & answered, rng.poisson(talk / 1000 / cfg.utterance_gap_s), 0)
    idx = np.repeat(conv, per_call)
    times = t_user_start[idx] + rng.random(len(idx)) * talk[idx]
    parts.append(_Events(np.full(len(idx), Event.TRANSCRIPTION, np.int8), ids[idx], ids[idx] * 4,
                         counters.take("utterances", len(idx)), media[idx], times))
    # The queue's conversation snapshots: queued (ACD connected), then ACD disconnected.
    for phase, times in enumerate((t_acd_start, t_acd_end)):
        parts.append(_Events(np.full(n, Event.QUEUE_CONVERSATION, np.int8), ids, ids * 4 + 1,
                             np.full(n, phase), media, times + rng.uniform(5, 80, n)))
    # What the agent's handling causes: routing status and activity (INTERACTING at user
    # start, IDLE after wrap-up), conversation summaries (active, in ACW, none) and the
    # conversation's analytics metrics after wrap-up.
    idx = conv[answered]
    k = len(idx)
    agent = pick(cfg.seed, Namespace.USER, ids[idx], AGENT_POOL)
    t_acw_end = (t_user_end + acw)[idx]
    interacting, idle = ROUTING_STATUSES.index("INTERACTING"), ROUTING_STATUSES.index("IDLE")
    for status, times in ((interacting, t_user_start[idx]), (idle, t_acw_end)):
        for event in (Event.ROUTING_STATUS, Event.ACTIVITY):
            parts.append(_Events(np.full(k, event, np.int8), agent, np.full(k, -1), np.full(k, status),
                                 np.full(k, _NO_MEDIA, np.int8), times + rng.uniform(1, 40, k)))
    for state, times in enumerate((t_user_start[idx], t_user_end[idx], t_acw_end)):
        parts.append(_Events(np.full(k, Event.CONVERSATION_SUMMARY, np.int8), agent, np.full(k, -1),
                             np.full(k, state), media[idx], times + rng.uniform(1, 40, k)))
    parts.append(_Events(np.full(k, Event.CONVERSATION_METRICS, np.int8), ids[idx], ids[idx] * 4 + 2,
                         np.full(k, -1),
                         media[idx], t_acw_end + rng.uniform(200, 2000, k)))
    return _Events.concat(parts)


def _flow_publishes(rng: np.random.Generator, started: np.ndarray, counters: _Counters) -> _Events:
    """Architect flow publishes starting at ``started``: each a STARTED then a SUCCESS notification of
    one flow."""
    k = len(started)
    flow = rng.integers(0, FLOWS, k)
    done = started + np.clip(_lognormal(rng, 4.0, 0.5, k), 0.5, 60.0) * 1000
    op = counters.take("flow publishes", k)
    return _Events(np.full(2 * k, Event.FLOW_NOTIFICATION, np.int8), np.r_[flow, flow], np.full(2 * k, -1),
                   np.r_[op * 2, op * 2 + 1], np.full(2 * k, _NO_MEDIA, np.int8), np.r_[started, done])


def _agent_sessions(cfg: TraceConfig, lo_ms: int, hi_ms: int) -> _Events:
    """NICE CXone agent logins beginning in ``[lo_ms, hi_ms)``: every agent works one shift a day,
    starting 06:00-14:00 UTC.

    A day's shifts are drawn from that day's own stream, so a day two epochs
    share gets the same shifts in both (each keeping those beginning in it).
    """
    trace_day = int(cfg.start_s * 1000 // _DAY_MS)
    days = np.arange(lo_ms // _DAY_MS, hi_ms // _DAY_MS + 1)
    draws = [np.random.default_rng([cfg.seed, cfg.n_events, _SESSION_STREAM, int(d) - trace_day]).uniform(
        (6, 0.95), (14, 1.05), (AGENT_POOL, 2)) for d in days]
    day = np.repeat(days, AGENT_POOL)
    agent = np.tile(np.arange(AGENT_POOL), len(days))
    hour, shift = (np.concatenate([d[:, i] for d in draws]) for i in (0, 1))
    begin = day * float(_DAY_MS) + hour * _HOUR_MS
    end = begin + cfg.agent_shift_s * 1000 * shift
    keep = (begin >= lo_ms) & (begin < hi_ms)
    day, agent, begin, end = day[keep], agent[keep], begin[keep], end[keep]
    k = len(day)
    kinds = np.repeat(np.array([Event.AGENT_SESSION_START, Event.AGENT_SESSION_END], np.int8), k)
    return _Events(kinds, np.r_[agent, agent], np.full(2 * k, -1), np.r_[day, day],
                   np.full(2 * k, _NO_MEDIA, np.int8), np.r_[begin, end])


def _contacts(rng: np.random.Generator, cfg: TraceConfig, start_ms: np.ndarray, counters: _Counters
              ) -> _Events:
    """NICE CXone contacts: created, state changes (queue, active, holds, wrap-up), ended."""
    n = len(start_ms)
    contact = np.arange(n)  # positions in this batch; ``ids`` numbers them across the trace
    ids = counters.take("contact", n)
    voice, answered, ivr, wait, talk, acw = _phases(rng, cfg, n, ivr_voice_s=25.0, ivr_chat_s=5.0)
    t_in_queue = start_ms + ivr
    t_left_queue = t_in_queue + wait
    t_active = t_left_queue + rng.uniform(300, 2000, n)
    t_post = t_active + talk
    t_ended = np.where(answered, t_post + acw, t_left_queue + rng.uniform(100, 1000, n))
    media = np.where(voice, _VOICE, _CHAT).astype(np.int8)
    state = {s: i for i, s in enumerate(NICE_STATES)}
    fixed = [
        (Event.CONTACT_CREATED, start_ms, None, -1),
        (Event.CONTACT_STATE, start_ms + rng.uniform(100, 500, n), None, state["PreQueue"]),
        (Event.CONTACT_STATE, t_in_queue, None, state["InQueue"]),
        (Event.CONTACT_STATE, t_left_queue, ~answered, state["Abandoned"]),
        (Event.AGENT_ASSIGNED, t_left_queue, answered, -1),
        (Event.CONTACT_STATE, t_active, answered, state["Active"]),
        (Event.CONTACT_STATE, t_post, answered, state["PostQueue"]),
        (Event.CONTACT_ENDED, t_ended, None, -1),
    ]
    parts = []
    for event, times, mask, item in fixed:
        idx = contact if mask is None else contact[mask]
        parts.append(_Events(np.full(len(idx), event, np.int8), ids[idx], np.full(len(idx), -1),
                             np.full(len(idx), item), media[idx], times[idx]))
    # Holds: pairs of Hold / Active state changes at sorted random points of the talk time.
    idx = np.repeat(contact, 2 * np.where(answered, rng.poisson(0.5, n), 0))
    times = t_active[idx] + rng.random(len(idx)) * talk[idx]
    order = np.lexsort((times, idx))
    idx, times = idx[order], times[order]
    first = np.r_[True, idx[1:] != idx[:-1]]
    rank = np.arange(len(idx)) - np.maximum.accumulate(np.where(first, np.arange(len(idx)), 0))
    items = np.where(rank % 2 == 0, state["Hold"], state["Active"])
    parts.append(_Events(np.full(len(idx), Event.CONTACT_STATE, np.int8), ids[idx], np.full(len(idx), -1),
                         items, media[idx], times))
    # The assigned agent's states: on the contact from assignment, available again when it ends.
    idx = contact[answered]
    k = len(idx)
    agent = pick(cfg.seed, Namespace.USER, ids[idx], AGENT_POOL)
    for agent_state, times in ((NICE_AGENT_STATES.index("InboundContact"), t_left_queue[idx]),
                               (NICE_AGENT_STATES.index("Available"), t_ended[idx])):
        parts.append(_Events(np.full(k, Event.AGENT_STATE, np.int8), agent, np.full(k, -1),
                             np.full(k, agent_state), np.full(k, _NO_MEDIA, np.int8),
                             times + rng.uniform(1, 40, k)))
    # Digital messages of answered chats, spread over the talk time.
    per_chat = np.where(~voice & answered, rng.poisson(talk / 1000 / cfg.chat_message_gap_s), 0)
    idx = np.repeat(contact, per_chat)
    times = t_active[idx] + rng.random(len(idx)) * talk[idx]
    parts.append(_Events(np.full(len(idx), Event.DIGITAL_MESSAGE, np.int8), ids[idx], np.full(len(idx), -1),
                         counters.take("messages", len(idx)), media[idx], times))
    return _Events.concat(parts)


def _distinct_times(events: _Events, time_ms: np.ndarray) -> np.ndarray:
    """Make events that share type, entity and participant differ in time (>= 1 ms apart).

    Two state updates of one participant or contact are distinct events with
    their own timestamps; drawing times independently could put two in the
    same millisecond, which no platform emits and no time-based key separates.
    """
    order = np.lexsort((time_ms, events.participant, events.entity, events.event))
    t = time_ms[order]
    ev, en, pa = events.event[order], events.entity[order], events.participant[order]
    first = np.r_[True, (ev[1:] != ev[:-1]) | (en[1:] != en[:-1]) | (pa[1:] != pa[:-1])]
    group = np.cumsum(first) - 1
    rank = np.arange(len(t)) - np.flatnonzero(first)[group]
    shifted = t - rank
    span = int(shifted.max() - shifted.min() + 1) if len(t) else 1
    running = np.maximum.accumulate(shifted + group * span) - group * span
    out = np.empty_like(time_ms)
    out[order] = running + rank
    return out


# ---- 2. publishing and delivery ------------------------------------------------


@dataclass
class _Rows(_Columns):
    """Delivered messages as columns: arrival, ground truth and their logical event's fields.

    ``logical`` numbers logical events in the order they were drawn (across
    epochs); ``logical_id``, the trace's, is given when the original is
    emitted (:func:`_number`; -1 until then). A message carries its event's fields, so messages
    waiting for a later epoch need nothing else kept.
    """

    arrival_ms: np.ndarray
    logical: np.ndarray
    logical_id: np.ndarray
    kind: np.ndarray
    original_arrival_ms: np.ndarray
    publish_no: np.ndarray
    envelope_time_ms: np.ndarray
    event: np.ndarray
    media: np.ndarray
    entity: np.ndarray
    participant: np.ndarray
    item: np.ndarray
    event_time_ms: np.ndarray

    @classmethod
    def empty(cls) -> _Rows:
        dtypes = (np.int64, np.int64, np.int32, np.int8, np.int64, np.int8, np.int64, np.int8, np.int8,
                  np.int32, np.int32, np.int32, np.int64)
        return cls(*(np.empty(0, dtype) for dtype in dtypes))

    def __len__(self) -> int:
        return len(self.arrival_ms)


def _argsort_dense(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values)`` of integers, by scattering their positions over the range they span when they
    are distinct and that range is at most a few times their number (an epoch's originals' logical events):
    linear, and a tenth of a sort's time. Otherwise (ties, a sparse range) ``np.argsort`` itself."""
    if len(values) == 0:
        return np.argsort(values)
    lo = int(values.min())
    span = int(values.max()) - lo + 1
    if span <= 4 * len(values):
        slot = np.full(span, -1, dtype=np.int64)
        slot[values - lo] = np.arange(len(values))
        order = slot[slot >= 0]
        if len(order) == len(values):  # no two values alike
            return order
    return np.argsort(values)


def _number(chunk: _Rows, pending: _Rows, next_id: int) -> int:
    """Give ``chunk``'s originals the logical ids from ``next_id`` on, in arrival order, and their copies
    (in ``chunk`` or ``pending``) the same; return the next free id.

    A copy always arrives after its original, so a row has its id by the time
    it is emitted, and only the rows at hand are looked at, never the trace's.
    """
    originals = np.flatnonzero(chunk.kind == _ORIGINAL)
    chunk.logical_id[originals] = next_id + np.arange(len(originals))
    if len(originals):
        order = _argsort_dense(chunk.logical[originals])
        drawn, ids = chunk.logical[originals][order], chunk.logical_id[originals][order]
        for rows in (chunk, pending):
            unknown = np.flatnonzero(rows.logical_id < 0)
            at = np.minimum(np.searchsorted(drawn, rows.logical[unknown]), len(drawn) - 1)
            found = drawn[at] == rows.logical[unknown]
            rows.logical_id[unknown[found]] = ids[at[found]]
    return next_id + len(originals)


def _publish_and_deliver(rng: np.random.Generator, cfg: TraceConfig, events: _Events, counters: _Counters
                         ) -> _Rows:
    """Every delivered message of ``events``: publish number, envelope time, arrival, kind, ground truth."""
    d = cfg.duplicates
    n = len(events)
    logical = np.arange(n)
    published = events.time_ms + _lognormal(rng, _PUBLISH_LATENCY_MS, 0.7, n)
    arrival0 = published + _lognormal(rng, _DELIVERY_LATENCY_MS, 0.6, n)

    # Producer re-publishes: attempt a waits for the PutEvents timeout, then an
    # exponential backoff with equal jitter, and gets a new envelope id and time.
    retries = np.minimum(rng.geometric(1 - d.publish_p, n) - 1, d.max_publishes)
    r_logical = np.repeat(logical, retries)
    first = np.cumsum(retries) - retries
    attempt = np.arange(len(r_logical)) - np.repeat(first, retries) + 1
    backoff_ms = np.minimum(d.backoff_cap_s, d.backoff_base_s * 2.0 ** (attempt - 1)) * 1000
    step_ms = d.publish_timeout_s * 1000 + backoff_ms * (0.5 + 0.5 * rng.random(len(attempt)))
    cumulative = np.cumsum(step_ms)
    before = np.repeat(np.r_[0.0, cumulative][first], retries)
    r_published = published[r_logical] + cumulative - before
    r_arrival = np.maximum(r_published + _lognormal(rng, _DELIVERY_LATENCY_MS, 0.6, len(r_logical)),
                           arrival0[r_logical] + 1)

    # SQS redeliveries of every published envelope after the visibility timeout.
    e_logical = np.r_[logical, r_logical]
    e_publish = np.r_[np.zeros(n, np.int64), attempt]
    e_time = np.r_[published, r_published]
    e_arrival = np.r_[arrival0, r_arrival]
    redeliveries = np.minimum(rng.geometric(1 - d.delivery_p, len(e_logical)) - 1, _MAX_REDELIVERIES)
    which = np.repeat(np.arange(len(e_logical)), redeliveries)
    first = np.cumsum(redeliveries) - redeliveries
    wait_ms = (d.visibility_timeout_s + d.redelivery_jitter_s * rng.random(len(which))) * 1000
    cumulative = np.cumsum(wait_ms)
    before = np.repeat(np.r_[0.0, cumulative][first], redeliveries)
    d_arrival = e_arrival[which] + cumulative - before

    # Late copies: EventBridge retrying the target (same envelope) or the
    # platform re-sending after an outage (a new envelope), 1 min to 1 day later.
    late = np.flatnonzero(rng.random(n) < d.late_p)
    delay_ms = np.exp(rng.uniform(np.log(d.late_min_s), np.log(d.late_max_s), len(late))) * 1000
    l_arrival = arrival0[late] + delay_ms
    same = rng.random(len(late)) < d.late_same_envelope_share
    l_publish = np.where(same, 0, retries[late] + 1)
    l_time = np.where(same, published[late], l_arrival - _DELIVERY_LATENCY_MS)

    position = np.r_[e_logical, e_logical[which], late]
    return _Rows(
        arrival_ms=np.floor(np.r_[e_arrival, d_arrival, l_arrival]).astype(np.int64),
        logical=counters.take("logical", n)[position],
        logical_id=np.full(len(position), -1, np.int32),
        kind=np.r_[np.full(n, _ORIGINAL), np.full(len(r_logical), _PUBLISH),
                   np.full(len(which), _DELIVERY), np.full(len(late), _LATE)].astype(np.int8),
        original_arrival_ms=np.floor(arrival0).astype(np.int64)[position],
        publish_no=np.r_[e_publish, e_publish[which], l_publish].astype(np.int8),
        envelope_time_ms=np.floor(np.r_[e_time, e_time[which], l_time]).astype(np.int64),
        event=events.event[position], media=events.media[position],
        entity=events.entity[position].astype(np.int32),
        participant=events.participant[position].astype(np.int32),
        item=events.item[position].astype(np.int32), event_time_ms=events.time_ms[position],
    )


# ---- 3. the frame ------------------------------------------------------------------


def _frame(rows: _Rows) -> pd.DataFrame:
    """A chunk of the trace frame: ``rows``, in arrival order and numbered."""
    return pd.DataFrame({
        "arrival_ms": rows.arrival_ms,
        "logical_id": rows.logical_id,
        "kind": pd.Categorical.from_codes(rows.kind, KINDS),
        "original_arrival_ms": rows.original_arrival_ms,
        "publish_no": rows.publish_no,
        "envelope_time_ms": rows.envelope_time_ms,
        "platform": pd.Categorical.from_codes((rows.event >= FIRST_NICE).astype(np.int8), PLATFORMS),
        "event": pd.Categorical.from_codes(rows.event, EVENT_NAMES),
        "media": pd.Categorical.from_codes(rows.media, MEDIA),
        "entity": rows.entity,
        "participant": rows.participant,
        "item": rows.item,
        "event_time_ms": rows.event_time_ms,
    }, columns=list(FRAME_COLUMNS), copy=False)  # every column is a fresh array: copying doubles the peak
