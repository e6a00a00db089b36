"""The testing helpers users get: EventRecorder and the pytest plugin's fixtures."""

from __future__ import annotations

import pytest

from aperion_event_bus import EventBus
from aperion_event_bus.testing import EventRecorder


async def test_recorder_fixture_captures_and_asserts(aperion_bus: EventBus, event_recorder: EventRecorder) -> None:
    await aperion_bus.publish("user.created", {"user_id": 1, "email": "a@b.c"})
    aperion_bus.publish_nowait("user.deleted", {"user_id": 2})
    await event_recorder.wait_for("user.deleted")
    event = event_recorder.assert_published("user.created", user_id=1)
    assert event.payload["email"] == "a@b.c"
    event_recorder.assert_published("user.*", count=2)
    event_recorder.assert_not_published("order.*")
    with pytest.raises(AssertionError, match=r"expected user\.created"):
        event_recorder.assert_published("user.created", user_id=99)
    with pytest.raises(AssertionError, match=r"expected no user\.deleted"):
        event_recorder.assert_not_published("user.deleted")
    assert [e.event_type for e in event_recorder.of_type("user.*")] == ["user.created", "user.deleted"]
    event_recorder.clear()
    assert event_recorder.events == []


def test_recorder_in_sync_code() -> None:
    bus = EventBus()
    with EventRecorder(bus, pattern="job.*") as recorder:
        bus.emit("job.started", {"id": 1})
        bus.emit("other.thing", {})
        recorder.wait_for_sync("job.started", timeout=2)
        assert [e.event_type for e in recorder.events] == ["job.started"]
        with pytest.raises(AssertionError, match="timed out"):
            recorder.wait_for_sync("job.finished", timeout=0.05)
    bus.emit("job.finished", {})
    bus.shutdown(2)
    assert recorder.of_type("job.finished") == []  # closed: no longer recording


async def test_wait_for_times_out_with_a_clear_message(event_recorder: EventRecorder) -> None:
    with pytest.raises(AssertionError, match=r"waiting for 1 x never\.happens"):
        await event_recorder.wait_for("never.happens", timeout=0.05)
