"""Time-ordered unique ids (``evt_...``, ``sub_...``) that are cheap to make.

An id is ``<prefix>`` + hex(milliseconds << 32 | per-process counter) + a random
48-bit node chosen per process (and again in a forked child), so ids sort by
creation time, never repeat inside a process and collide across processes only
if two processes draw the same node in the same millisecond at the same count.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

from ._accel import speedups

__all__ = ["event_id_at", "new_event_id", "new_id"]


class _IdSource:
    """Counter + node pair; one per process (re-seeded after fork).

    ``head`` caches ``evt_`` + milliseconds + the counter's upper 24 bits as one
    string, keyed by both; it changes at most every 256 ids or each millisecond
    and is replaced as a whole, so threads never mix one key with another's text.
    ``tails`` holds the counter's low byte + the node for every byte value, so an
    id costs one counter step, one comparison and one concatenation."""

    __slots__ = ("counter", "head", "node", "tails")

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        start = int.from_bytes(os.urandom(3), "big")
        self.node = os.urandom(6).hex()
        self.counter: Iterator[int] = itertools.count(start)
        if speedups is not None:  # one counter and node for the C and the Python ids
            speedups.seed_ids(start, self.node)
            self.counter = speedups.id_counter
        self.tails = [f"{low:02x}{self.node}" for low in range(256)]
        self.head: tuple[int, int, str] = (-1, -1, "")


_SOURCE = _IdSource()
os.register_at_fork(after_in_child=_SOURCE.reseed)
_time_ns = time.time_ns
_time = time.time


def _py_new_id(prefix: str, /) -> str:
    """Return ``prefix`` followed by a unique, time-ordered hex id."""
    src = _SOURCE
    return f"{prefix}{((_time_ns() // 1_000_000) << 32) | (next(src.counter) & 0xFFFFFFFF):019x}{src.node}"


def _py_new_event_id() -> str:
    """Return a new ``evt_`` id (see module docstring for the guarantees)."""
    return _py_event_id_at(_time())


def _py_event_id_at(now: float, /) -> str:
    """The ``evt_`` id of an event created at Unix time ``now`` (seconds, from
    ``time.time()``): callers that stamp a timestamp anyway share the clock read.

    Same text as ``new_id("evt_")``: 11 hex digits of milliseconds, 8 of counter."""
    src = _SOURCE
    n = next(src.counter) & 0xFFFFFFFF
    ms = int(now * 1000)
    high = n >> 8
    head = src.head
    if head[0] != ms or head[1] != high:
        head = src.head = (ms, high, f"evt_{ms:011x}{high:06x}")
    return head[2] + src.tails[n & 0xFF]


# The C twins (same text, same shared counter and node) when the accelerator is in use.
new_id = _py_new_id if speedups is None else speedups.new_id
new_event_id = _py_new_event_id if speedups is None else speedups.new_event_id
event_id_at = _py_event_id_at if speedups is None else speedups.event_id_at
