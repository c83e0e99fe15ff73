"""Deterministic identifiers for synthetic traces, built a column at a time.

A trace stores integer indices (conversation 17, participant 69, ...); the
UUID strings an envelope shows are derived from ``(seed, namespace, index)``
only when envelopes are materialised, so a 10M-event trace stays a compact
frame of integers and every copy of an event renders the same ids.
"""

from __future__ import annotations

import enum

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(256, 2)
# Where each of the 32 hex digits goes in the 36-character UUID text.
_UUID_POSITIONS = np.r_[0:8, 9:13, 14:18, 19:23, 24:36]


class Namespace(enum.IntEnum):
    """Kinds of id; each gets an independent stream of UUIDs."""

    ENVELOPE = 1
    CONVERSATION = 2
    PARTICIPANT = 3
    SESSION = 4
    CORRELATION = 5
    UTTERANCE = 6
    AUDIT = 7
    ENTITY = 8
    USER = 9
    QUEUE = 10
    FLOW = 11
    INTERACTION = 12
    AGENT_SESSION = 13
    OPERATION = 14
    MESSAGE = 15


def mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-spread bijection on uint64 (wraps modulo 2**64)."""
    z = np.asarray(values, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uuids(seed: int, namespace: Namespace, index: np.ndarray) -> list[str]:
    """Version-4-shaped UUID strings, one per index, determined by seed and namespace."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    salt = mix64(np.array([(seed & 0xFFFFFFFF) << 8 | int(namespace)], dtype=np.uint64))
    hi = mix64(idx ^ salt)
    lo = mix64(hi ^ salt ^ _GOLDEN)
    hi = (hi & np.uint64(0xFFFFFFFFFFFF0FFF)) | np.uint64(0x4000)  # version 4
    lo = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)  # RFC 4122 variant
    raw = np.stack([hi, lo], axis=1).astype(">u8").view(np.uint8).reshape(-1, 16)
    text = np.full((len(idx), 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_POSITIONS] = _HEX[raw].reshape(-1, 32)
    return text.view("S36").ravel().astype("U36").tolist()


def pick(seed: int, namespace: Namespace, index: np.ndarray, size: int) -> np.ndarray:
    """A deterministic pseudo-random choice in ``range(size)`` per index (e.g. a conversation's agent)."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    salt = np.uint64(((seed & 0xFFFFFFFF) << 8 | int(namespace)) * 0x2545F4914F6CDD1D % 2**64)
    return (mix64(idx ^ salt) % np.uint64(size)).astype(np.int64)
