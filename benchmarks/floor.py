"""What CPython itself costs for the least work a queued fire-and-forget event needs.

No bus code: each variant is the bare minimum of one part of the work, written as
tightly as plain Python allows, so the figures are a ceiling for any pure-Python
bus on this machine and interpreter (see docs/benchmarks.md, issue #2):

- ``queue+step``: put a small record on a deque, later pop it and step a no-op
  ``async def`` handler once in a copy of a context (what every queued async
  delivery must do to honour contextvars);
- ``+ envelope``: the same, plus what an envelope needs: a unique time-ordered id,
  a timestamp and a read-only copy of the payload (a dict subclass), in a slots
  object;
- ``plain function call``: a synchronous call of one receiver (no queue, no context,
  no envelope), for reference.

Run: ``python benchmarks/floor.py`` (median of 5 runs of 200,000 events).
"""

from __future__ import annotations

import contextvars
import itertools
import statistics
import time
from collections import deque
from typing import Any

N = 200_000


class _Record:
    __slots__ = ("ctx", "event_id", "payload", "timestamp", "type")


class _ReadOnly(dict[str, Any]):
    __slots__ = ()


async def _noop(record: _Record) -> None:
    return None


def queue_and_step(envelope: bool) -> float:
    """Events/s for publish-all-then-drain with the minimum per-event work."""
    ctx = contextvars.copy_context()
    queue: deque[_Record] = deque()
    counter = itertools.count()
    clock = time.time
    t0 = time.perf_counter()
    for i in range(N):
        r = _Record()
        r.type = "bench.event"
        r.ctx = ctx
        if envelope:
            now = clock()
            r.timestamp = now
            r.event_id = f"evt_{int(now * 1000):011x}{next(counter) & 0xFFFFFFFF:08x}"
            r.payload = _ReadOnly({"i": i})
        else:
            r.payload = {"i": i}
        queue.append(r)
    while queue:
        r = queue.popleft()
        own = r.ctx.copy()
        coro = own.run(_noop, r)
        try:
            own.run(coro.send, None)
        except StopIteration:
            pass
    return N / (time.perf_counter() - t0)


def direct_call() -> float:
    """Events/s for a plain synchronous call per event (blinker's shape)."""
    seen = 0

    def receiver(payload: dict[str, Any]) -> None:
        nonlocal seen
        seen += 1

    receivers = [receiver]
    t0 = time.perf_counter()
    for i in range(N):
        payload = {"i": i}
        for r in receivers:
            r(payload)
    return N / (time.perf_counter() - t0)


def main() -> None:
    rows = [
        ("queue+step (no envelope)", lambda: queue_and_step(False)),
        ("queue+step + envelope (id, timestamp, read-only payload)", lambda: queue_and_step(True)),
        ("plain function call per event (no library)", direct_call),
    ]
    print(f"n={N}, median of 5")
    for label, fn in rows:
        rate = statistics.median(fn() for _ in range(5))
        print(f"  {label:58s} {rate:12,.0f} events/s")


if __name__ == "__main__":
    main()
