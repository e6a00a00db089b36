"""Kill -9 a process that appends to the store at random moments; nothing it was told
is committed may be lost, unacknowledged deliveries stay pending, the file stays sound."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from crash_harness import integrity_ok, run_until_killed

from aperion_event_bus.storage.sqlite import SQLiteStore

NAME = "crash-sub"  # the durable name crash_child.py uses
CHILD = Path(__file__).with_name("crash_child.py")
ITERATIONS = 24
BUDGET_SECONDS = 30.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_never_loses_a_committed_append(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    appended: list[str] = []
    acked: set[str] = set()  # ack returned: must not be pending
    ack_sent: set[str] = set()  # ack may or may not have committed
    started = time.monotonic()
    iterations = 0
    while iterations < ITERATIONS and time.monotonic() - started < BUDGET_SECONDS:
        synchronous = "FULL" if iterations % 3 == 2 else "NORMAL"
        args = [str(db), synchronous, str(rng.randrange(1 << 30))]
        lines = run_until_killed(CHILD, args, tmp_path / "child.out", rng.uniform(0.0, 0.35))
        for line in lines:
            tag, _, event_id = line.partition(" ")
            if not event_id.startswith("evt_") or len(event_id) < 20:
                continue  # the line being written when the kill landed
            if tag == "A":
                appended.append(event_id)
            elif tag == "B":
                ack_sent.add(event_id)
            elif tag == "K":
                acked.add(event_id)
        iterations += 1

        # the file opens cleanly and holds everything reported committed so far
        with SQLiteStore(db) as store:
            stored = {e.event_id for e in store.iter_events()}
            missing = [eid for eid in appended if eid not in stored]
            assert not missing, f"iteration {iterations}: {len(missing)} committed appends lost"
            pending = {e.event_id for e, _ in store.pending_deliveries(NAME)}
            lost = [eid for eid in appended if eid not in ack_sent and eid not in pending]
            assert not lost, f"{len(lost)} unacknowledged deliveries are no longer pending"
            assert not (acked & pending), "an acknowledged delivery came back"
        assert integrity_ok(db)

    assert iterations >= 8
    assert len(appended) > 500, "the child hardly wrote anything; the test proves nothing"
