"""Child process for test_bus_durable: publishes with a store; the durable handler
prints ``STARTED <event_id>`` and then sleeps until the parent SIGKILLs the process.

Usage: python durable_child.py DB_PATH
"""

from __future__ import annotations

import asyncio
import sys

from aperion_event_bus import Event, EventBus


async def main() -> None:
    bus = EventBus(store=f"sqlite:///{sys.argv[1]}")

    async def slow(event: Event) -> None:
        # mid-work: the first attempt is recorded without waiting for the disk and
        # commits within milliseconds; a crash inside that window is not counted
        await asyncio.sleep(0.05)
        sys.stdout.write(f"STARTED {event.event_id}\n")
        sys.stdout.flush()
        await asyncio.sleep(60)

    bus.on("job.run", slow, name="worker", durable=True, timeout=None)
    result = await bus.publish("job.run", {"n": 1}, wait=False)
    sys.stdout.write(f"PUBLISHED {result.event.event_id}\n")
    sys.stdout.flush()
    await asyncio.sleep(60)


if __name__ == "__main__":
    asyncio.run(main())
