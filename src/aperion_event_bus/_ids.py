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

__all__ = ["new_event_id", "new_id"]


class _IdSource:
    """Counter + node pair; one per process (re-seeded after fork)."""

    __slots__ = ("counter", "node")

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self.node = os.urandom(6).hex()


_SOURCE = _IdSource()
os.register_at_fork(after_in_child=_SOURCE.reseed)
_time_ns = time.time_ns


def new_id(prefix: str) -> str:
    """Return ``prefix`` followed by a unique, time-ordered hex id."""
    src = _SOURCE
    return f"{prefix}{((_time_ns() // 1_000_000) << 32) | (next(src.counter) & 0xFFFFFFFF):019x}{src.node}"


def new_event_id() -> str:
    """Return a new ``evt_`` id (see module docstring for the guarantees)."""
    src = _SOURCE
    return f"evt_{((_time_ns() // 1_000_000) << 32) | (next(src.counter) & 0xFFFFFFFF):019x}{src.node}"
