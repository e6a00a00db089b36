"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aperion_event_bus import EventBus, _accel

pytest_plugins = ["pytester"]  # runs the pytest plugin's fixtures in an inner session


@pytest.fixture
def sync_bus() -> Iterator[EventBus]:
    bus = EventBus(handler_timeout=5.0)
    yield bus
    bus.shutdown(timeout=5.0)


# ------------------------------------------------- the lane loop: C and Python
def _quick_paths() -> list[str]:
    return ["c", "python"] if _accel.ACCELERATED else ["python"]


def count_c_loop(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of the C loop over bare events (one item per call)."""
    from aperion_event_bus import dispatch

    calls: list[int] = []
    real = dispatch._quick_bare

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(dispatch, "_quick_bare", counted)
    return calls


@pytest.fixture(params=_quick_paths())
def loop_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with the C loop over bare events available and without it."""
    from aperion_event_bus import dispatch

    if request.param == "python":
        monkeypatch.setattr(dispatch, "_quick_bare", None)
    return str(request.param)


@pytest.fixture(params=_quick_paths())
def quick_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with the C loop over bare events (failing if it is not used)
    and with the Python loop."""
    from aperion_event_bus import dispatch

    if request.param == "python":
        monkeypatch.setattr(dispatch, "_quick_bare", None)
    else:
        calls = count_c_loop(monkeypatch)
        request.addfinalizer(lambda: calls or pytest.fail("the C loop was never used"))
    return str(request.param)


@pytest.fixture
def c_loop_calls(loop_path: str, monkeypatch: pytest.MonkeyPatch) -> list[int] | None:
    """With ``loop_path``: the calls of the C loop over bare events (None on the
    Python loop), for tests that use it on some of their parameters only."""
    return count_c_loop(monkeypatch) if loop_path == "c" else None
