"""pytest fixtures: ``aperion_bus`` (a fresh EventBus, shut down after the test)
and ``event_recorder`` (an EventRecorder on it). Loaded via the pytest11 entry point."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .bus import EventBus
from .testing import EventRecorder


@pytest.fixture
def aperion_bus() -> Iterator[EventBus]:
    """A fresh EventBus; usable from sync and async tests; closed afterwards."""
    bus = EventBus(name="test-bus", handler_timeout=10.0)
    yield bus
    bus.shutdown(timeout=5.0)


@pytest.fixture
def event_recorder(aperion_bus: EventBus) -> Iterator[EventRecorder]:
    """Records every event delivered on ``aperion_bus``."""
    with EventRecorder(aperion_bus) as recorder:
        yield recorder
