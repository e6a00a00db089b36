"""Publish N events and drain: the workload for instruction counts per event.

Run under callgrind twice and divide the difference by the difference in N::

    valgrind --tool=callgrind python benchmarks/publish_loop.py nowait 10000
    valgrind --tool=callgrind python benchmarks/publish_loop.py nowait 30000

Scenarios: ``nowait`` (``publish_nowait`` to 1 async handler, then drain),
``fanout`` (10 handlers and 1,000 non-matching pattern subscriptions) and
``await`` (``await bus.publish`` one at a time). Set
``APERION_EVENT_BUS_NO_EXTENSIONS=1`` for the pure-Python build.
"""

from __future__ import annotations

import asyncio
import sys

from aperion_event_bus import Event, EventBus


async def run(scenario: str, n: int) -> None:
    async with EventBus() as bus:

        async def handler(e: Event) -> None:
            return None

        for _ in range(10 if scenario == "fanout" else 1):
            bus.on("user.created", handler)
        if scenario == "fanout":
            for k in range(1000):
                bus.on(f"noise{k}.*", handler)
        if scenario == "await":
            for i in range(n):
                await bus.publish("user.created", {"i": i})
        else:
            publish = bus.publish_nowait
            for i in range(n):
                publish("user.created", {"i": i})
            await bus.drain()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("nowait", "fanout", "await"):
        sys.exit("usage: publish_loop.py nowait|fanout|await N")
    asyncio.run(run(sys.argv[1], int(sys.argv[2])))
