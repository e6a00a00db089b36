"""Handler timeouts in every publishing mode, not only ``await bus.publish``.

A handler that exceeds its timeout is cancelled (async) or abandoned and reported
(sync: a thread cannot be killed), ``system.handler_error`` carries
``timed_out=True``, and the bus, and the same subscription, keep working.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from aperion_event_bus import Event, EventBus

TIMEOUT = 0.05
# fire-and-forget modes go through the subscription's lane; these two queue bare
# events, which the C loop (or its Python twin) runs for async handlers
BARE_MODES = ("publish_nowait", "emit")
ASYNC_CODE_MODES = ("publish_nowait", "publish_wait_false")


class Probe:
    """A handler that hangs on ``{"hang": True}`` and records the rest; the async
    variant notes its cancellation."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.cancelled: list[int] = []
        self.errors: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def async_handler(self, e: Event) -> None:
        if e.payload["hang"]:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                self.cancelled.append(e.payload["i"])
                raise
        with self.lock:
            self.handled.append(e.payload["i"])

    def sync_handler(self, e: Event) -> None:
        if e.payload["hang"]:
            time.sleep(TIMEOUT * 3)  # over the timeout, then returns (its result is discarded)
        with self.lock:
            self.handled.append(e.payload["i"])

    def on_error(self, e: Event) -> None:
        with self.lock:
            self.errors.append(dict(e.payload))


def _subscribe(bus: EventBus, probe: Probe, kind: str) -> None:
    """The async handler gets ``timeout=``; the sync one the bus's ``handler_timeout``."""
    if kind == "async":
        bus.on("t.x", probe.async_handler, timeout=TIMEOUT)
    else:
        bus.on("t.x", probe.sync_handler)
    bus.on("system.handler_error", probe.on_error)


def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


async def _async_code(mode: str, kind: str, probe: Probe) -> None:
    async with EventBus(handler_timeout=TIMEOUT if kind == "sync" else 30.0) as bus:
        _subscribe(bus, probe, kind)
        for i, hang in enumerate((False, True, False)):
            if mode == "publish_nowait":
                assert bus.publish_nowait("t.x", {"i": i, "hang": hang}) is not None
            else:
                result = await bus.publish("t.x", {"i": i, "hang": hang}, wait=False)
                assert result.accepted and result.handler_results == []
        assert await bus.drain(5)
        # the bus keeps working: a waited publish afterwards is handled normally
        result = await bus.publish("t.x", {"i": 3, "hang": False})
        assert result.ok


def _sync_code(mode: str, kind: str, probe: Probe) -> None:
    bus = EventBus(handler_timeout=TIMEOUT if kind == "sync" else 30.0)
    try:
        _subscribe(bus, probe, kind)
        wait = mode == "emit_wait"
        for i, hang in enumerate((False, True, False)):
            assert bus.emit("t.x", {"i": i, "hang": hang}, wait_for_handlers=wait)
        _wait_until(lambda: bus.get_pending_count() == 0 and len(probe.handled) >= 2)
        bus.emit("t.x", {"i": 3, "hang": False}, wait_for_handlers=True)
        _wait_until(lambda: bus.get_pending_count() == 0 and bool(probe.errors))
    finally:
        bus.shutdown(5)


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("mode", ["publish_nowait", "publish_wait_false", "emit", "emit_wait"])
def test_timeout_in_every_mode(mode: str, kind: str, c_loop_calls: list[int] | None) -> None:
    """``publish_nowait``, ``publish(wait=False)``, fire-and-forget ``emit`` from sync
    code and ``emit(wait_for_handlers=True)``, with an async and a sync handler, on
    the C and the Python lane loop: the timed-out handler is cancelled (async) or
    reported (sync), ``system.handler_error`` says ``timed_out=True``, and later
    events on the same subscription are handled."""
    probe = Probe()
    if mode in ASYNC_CODE_MODES:
        asyncio.run(_async_code(mode, kind, probe))
    else:
        _sync_code(mode, kind, probe)

    assert {0, 2, 3} <= set(probe.handled)  # before and after the timeout: handled
    if kind == "async":
        assert probe.cancelled == [1]  # cancelled, never finished
        assert 1 not in probe.handled
    [error] = probe.errors
    assert error["timed_out"] is True
    assert error["error_type"] == "HandlerTimeoutError"
    assert error["original_event_type"] == "t.x"
    if c_loop_calls is not None and kind == "async" and mode in BARE_MODES:
        assert c_loop_calls, "the C loop over bare events was never used"
