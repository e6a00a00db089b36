"""Test helpers for code that publishes events: a recorder and pytest fixtures.

    recorder = EventRecorder(bus)          # or the ``event_recorder`` fixture
    await service.do_something()
    await recorder.wait_for("user.created")
    recorder.assert_published("user.created", user_id=42)

The pytest plugin (fixtures ``aperion_bus`` and ``event_recorder``) is registered
automatically through the ``pytest11`` entry point when the package is installed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .bus import EventBus
from .events import Event
from .patterns import compile_pattern

__all__ = ["EventRecorder"]


class EventRecorder:
    """Records every event matching ``pattern`` that is published on the bus.

    It watches through a tap (``EventBus.add_tap``), not a subscription, so the
    code under test sees the bus as it would without it: no extra entry in any
    ``PublishResult``, ``get_subscriptions()`` or ``get_stats()``. Events are
    recorded in publish order as they are published (also those no handler
    matches, and the ``system.handler_error`` reports), before their handlers
    run: wait for a handler's effect, not for the recorder, when that matters."""

    def __init__(self, bus: EventBus, pattern: str = "*") -> None:
        self.bus = bus
        self.pattern = pattern
        self._matches = compile_pattern(pattern)
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        bus.add_tap(self._record)

    def _record(self, event: Event) -> None:
        """The tap: runs in the publisher's thread, so it only appends and notifies."""
        if self._matches(event.event_type):
            with self._changed:
                self._events.append(event)
                self._changed.notify_all()

    @property
    def events(self) -> list[Event]:
        """A copy of the recorded events, in delivery order."""
        with self._lock:
            return list(self._events)

    def of_type(self, pattern: str) -> list[Event]:
        """Recorded events whose type matches ``pattern`` (wildcards allowed)."""
        match = compile_pattern(pattern)
        return [e for e in self.events if match(e.event_type)]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def close(self) -> None:
        """Stop recording (remove the tap); the events recorded so far stay."""
        self.bus.remove_tap(self._record)

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _matching(self, pattern: str, fields: dict[str, Any]) -> list[Event]:
        return [
            e
            for e in self.of_type(pattern)
            if all(k in e.payload and e.payload[k] == v for k, v in fields.items())
        ]

    def assert_published(self, pattern: str, count: int | None = None, **fields: Any) -> Event:
        """Assert an event matching ``pattern`` whose payload contains ``fields`` was
        recorded (exactly ``count`` times when given); return the latest one."""
        found = self._matching(pattern, fields)
        if not found or (count is not None and len(found) != count):
            seen = ", ".join(e.event_type for e in self.events[-20:]) or "nothing"
            want = f"{count} x " if count is not None else ""
            raise AssertionError(
                f"expected {want}{pattern} with {fields or 'any payload'}; found {len(found)}. "
                f"Recorded (last 20): {seen}"
            )
        return found[-1]

    def assert_not_published(self, pattern: str, **fields: Any) -> None:
        found = self._matching(pattern, fields)
        if found:
            raise AssertionError(f"expected no {pattern} event, found {len(found)}: {found[0]!r}")

    def _wait_sync(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    async def wait_for(
        self, pattern: str, count: int = 1, timeout: float = 2.0, **fields: Any
    ) -> list[Event]:
        """Wait until ``count`` matching events were recorded; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._matching(pattern, fields)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {count} x {pattern}; got {len(found)}"
                )
            await asyncio.sleep(0.001)

    def wait_for_sync(
        self, pattern: str, count: int = 1, timeout: float = 2.0, **fields: Any
    ) -> list[Event]:
        """Blocking variant of ``wait_for`` for sync tests."""
        if not self._wait_sync(lambda: len(self._matching_unlocked(pattern, fields)) >= count, timeout):
            raise AssertionError(f"timed out after {timeout}s waiting for {count} x {pattern}")
        return self._matching(pattern, fields)

    def _matching_unlocked(self, pattern: str, fields: dict[str, Any]) -> list[Event]:
        match = compile_pattern(pattern)
        return [
            e
            for e in self._events
            if match(e.event_type) and all(k in e.payload and e.payload[k] == v for k, v in fields.items())
        ]
