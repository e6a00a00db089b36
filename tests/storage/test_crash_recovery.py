"""Kill -9 a process that appends to the store at random moments; nothing it was told
is committed may be lost, unacknowledged deliveries stay pending, the file stays sound."""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aperion_event_bus.storage.sqlite import SQLiteStore

NAME = "crash-sub"  # the durable name crash_child.py uses
CHILD = Path(__file__).with_name("crash_child.py")
SRC = str(Path(__file__).resolve().parents[2] / "src")
ITERATIONS = 24
BUDGET_SECONDS = 30.0


def _run_and_kill(db: Path, synchronous: str, seed: int, rng: random.Random) -> list[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), synchronous, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        # never hang on a child that cannot start (e.g. a starved machine): wait 60 s
        ready, _, _ = select.select([child.stdout], [], [], 60.0)
        if not ready:
            child.kill()
            _, err = child.communicate(timeout=10)
            raise AssertionError(f"child did not report READY within 60 s: {err.decode()[-2000:]}")
        first = child.stdout.readline()
        if not first.startswith(b"READY"):
            child.kill()  # before reading stderr: a child blocked on a full stdout never exits
            _, err = child.communicate(timeout=10)
            raise AssertionError(f"child's first line was {first!r}, not READY: {err.decode()[-2000:]}")
        time.sleep(rng.uniform(0.0, 0.35))
    finally:
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return out.decode(errors="replace").splitlines()


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
        lines = _run_and_kill(db, synchronous, rng.randrange(1 << 30), rng)
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
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()

    assert iterations >= 8
    assert len(appended) > 500, "the child hardly wrote anything; the test proves nothing"
