"""pytest fixtures, loaded via the pytest11 entry point.

``aperion_bus``: a fresh EventBus, closed after the test. In an ``async def`` test
(with pytest-asyncio) it is ``aperion_async_bus``: bound to the test's loop and
closed there with ``await bus.close(...)``, so events still pending when the test
body returns are drained instead of being cancelled with the loop.
``event_recorder``: an EventRecorder on ``aperion_bus``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from .bus import EventBus
from .testing import EventRecorder

pytest_asyncio: Any
try:
    import pytest_asyncio
except ImportError:  # async tests need pytest-asyncio; sync tests work without it
    pytest_asyncio = None

CLOSE_TIMEOUT = 5.0  # seconds the fixtures wait for pending events at teardown


def _new_bus() -> EventBus:
    return EventBus(name="test-bus", handler_timeout=10.0)


def _async_fixture(func: Callable[..., Any]) -> Any:
    """An async fixture in pytest-asyncio's strict and auto modes alike."""
    if pytest_asyncio is None:
        return pytest.fixture(func)
    return pytest_asyncio.fixture(func)


@_async_fixture
async def aperion_async_bus() -> AsyncIterator[EventBus]:
    """A fresh EventBus on the test's event loop, closed there after the test with
    ``await bus.close(CLOSE_TIMEOUT)``: pending events are handled first."""
    bus = _new_bus()
    async with bus:  # binds the bus to this (the test's) loop now
        try:
            yield bus
        finally:
            await bus.close(CLOSE_TIMEOUT)


@pytest.fixture
def aperion_bus(request: pytest.FixtureRequest) -> Iterator[EventBus]:
    """A fresh EventBus, closed afterwards; usable from sync and async tests.

    For an ``async def`` test this is ``aperion_async_bus`` (closed in the test's
    loop); for a sync test the bus runs its own loop thread and is shut down with
    ``bus.shutdown(CLOSE_TIMEOUT)``."""
    test = getattr(request, "function", None)
    if pytest_asyncio is not None and inspect.iscoroutinefunction(test):
        yield request.getfixturevalue("aperion_async_bus")
        return
    bus = _new_bus()
    yield bus
    bus.shutdown(timeout=CLOSE_TIMEOUT)


@pytest.fixture
def event_recorder(aperion_bus: EventBus) -> Iterator[EventRecorder]:
    """Records every event published on ``aperion_bus``."""
    with EventRecorder(aperion_bus) as recorder:
        yield recorder
