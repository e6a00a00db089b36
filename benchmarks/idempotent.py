"""The memory of ``idempotent`` handlers (``idempotency.LRUSeen``): the cost per new
event id (one miss, one add: what an idempotent handler pays per event) and the
longest single call, which is how long it can hold up the event loop.

    python benchmarks/idempotent.py                 # 600,000 ids, maxsize 100,000
    python benchmarks/idempotent.py --maxsize 1000000
"""

from __future__ import annotations

import argparse
import time
import uuid

from aperion_event_bus.idempotency import LRUSeen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ids", type=int, default=600_000)
    parser.add_argument("--maxsize", type=int, default=100_000)
    args = parser.parse_args()
    ids = [str(uuid.uuid4()) for _ in range(args.ids)]
    seen = LRUSeen(args.maxsize)
    clock = time.perf_counter
    calls: list[float] = []
    start = clock()
    for event_id in ids:
        t0 = clock()
        if event_id not in seen:
            seen.add(event_id)
        calls.append(clock() - t0)
    elapsed = clock() - start
    untimed = clock()
    other = LRUSeen(args.maxsize)
    for event_id in ids:
        if event_id not in other:
            other.add(event_id)
    untimed = clock() - untimed
    calls.sort()
    print(
        f"LRUSeen(maxsize={args.maxsize:,}), {args.ids:,} new ids: "
        f"{untimed / args.ids * 1e6:.2f} us per id (miss + add), "
        f"longest call {calls[-1] * 1e3:.2f} ms, p99.9 {calls[int(len(calls) * 0.999)] * 1e6:.1f} us "
        f"(timed loop {elapsed / args.ids * 1e6:.2f} us per id); holds {len(seen):,} ids"
    )


if __name__ == "__main__":
    main()
