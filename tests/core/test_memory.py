"""1,000,000 events through the bus leave nothing behind (counts, not timings)."""

from __future__ import annotations

import gc
import sys

import pytest

from aperion_event_bus import Event, EventBus


def _live_events() -> int:
    """GC-tracked events only: the C accelerator does not track events that cannot
    be part of a cycle (scalar payloads), so the test also counts allocated memory
    blocks, which include every object."""
    return sum(1 for o in gc.get_objects() if isinstance(o, Event))


@pytest.mark.slow
async def test_one_million_events_bounded_memory() -> None:
    handled = 0
    async with EventBus(max_pending_events=10_000, overflow_policy="block") as bus:

        @bus.on("mem.x")
        async def handler(e: Event) -> None:
            nonlocal handled
            handled += 1

        for i in range(10_000):  # warm-up: lanes, caches
            await bus.publish("mem.x", {"i": i}, wait=False)
        await bus.drain(30)
        gc.collect()
        objects_before = len(gc.get_objects())
        blocks_before = sys.getallocatedblocks()
        peak_pending = 0
        for i in range(1_000_000):
            await bus.publish("mem.x", {"i": i}, wait=False)
            if i % 100_000 == 0:
                peak_pending = max(peak_pending, bus.get_pending_count())
        assert await bus.drain(60)
        gc.collect()
        objects_after = len(gc.get_objects())
        blocks_after = sys.getallocatedblocks()
        assert handled == 1_010_000
        assert peak_pending <= 10_000
        assert _live_events() < 10
        assert objects_after - objects_before < 1_000, (objects_before, objects_after)
        assert blocks_after - blocks_before < 10_000, (blocks_before, blocks_after)
