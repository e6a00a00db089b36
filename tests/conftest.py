"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aperion_event_bus import EventBus


@pytest.fixture
def sync_bus() -> Iterator[EventBus]:
    bus = EventBus(handler_timeout=5.0)
    yield bus
    bus.shutdown(timeout=5.0)
