"""SQLiteStore: appends, group commit, deliveries, replay, retention, DLQ, files, schema."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from aperion_event_bus.errors import ConfigurationError, EventBusError
from aperion_event_bus.events import Event
from aperion_event_bus.storage import _retention
from aperion_event_bus.storage._schema import APPLICATION_ID, SCHEMA_VERSION
from aperion_event_bus.storage.sqlite import (
    CompactionReport,
    SQLiteStore,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db_path).open()
    try:
        yield s
    finally:
        s.close()


def ev(event_type: str = "order.created", n: int = 0, **kw: Any) -> Event:
    return Event(event_type, {"n": n, "nested": {"items": [1, "two", {"x": None}]}}, **kw)


def pending_ids(store: SQLiteStore, name: str) -> list[str]:
    return [e.event_id for e, _ in store.pending_deliveries(name)]


# -- appends and reads ---------------------------------------------------------------


async def test_append_round_trips_every_field(store: SQLiteStore) -> None:
    e = Event(
        "order.created",
        {"total": 12.5, "text": 'ünïcødé "quoted" \n', "nested": {"a": [1, 2, {"b": True}]}},
        timestamp=1_700_000_000.123456,
        source="svc",
        correlation_id="corr-1",
        causation_id="evt_parent",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="k=v",
    )
    await store.append(e)
    got = store.get_event(e.event_id)
    assert got == e
    assert got is not None and got.timestamp == e.timestamp
    with pytest.raises(TypeError):
        cast(Any, got.payload)["total"] = 1
    assert store.get_event("evt_missing") is None
    assert store.count_events() == 1


async def test_append_many_and_sync_variants(store: SQLiteStore) -> None:
    batch = [ev(n=i) for i in range(10)]
    await store.append_many(batch, ["sub"])
    store.append_many_sync([ev(n=10), ev(n=11)])
    store.append_sync(ev(n=12), durable_names=["sub"])
    assert [e.payload["n"] for e in store.iter_events()] == list(range(13))
    assert store.pending_count("sub") == 11
    await store.append_many([])  # nothing to do


async def test_append_rejects_non_events_and_bad_names(store: SQLiteStore) -> None:
    with pytest.raises(TypeError):
        await store.append({"event_type": "a.b"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.append(ev(), [""])


async def test_duplicate_event_id_is_stored_once_and_gains_deliveries(store: SQLiteStore) -> None:
    e = ev()
    await store.append(e, ["a"])
    await store.append(e, ["a", "b"])
    assert store.count_events() == 1
    assert pending_ids(store, "a") == [e.event_id]
    assert pending_ids(store, "b") == [e.event_id]


async def test_concurrent_threads_and_loop_all_commit_in_order(store: SQLiteStore) -> None:
    per_thread = 300
    threads = []

    def worker(tag: int) -> None:
        for i in range(per_thread):
            store.append_sync(Event("thread.wrote", {"tag": tag, "i": i}), ["sub"])

    for tag in range(4):
        t = threading.Thread(target=worker, args=(tag,))
        threads.append(t)
        t.start()

    async def task(tag: int) -> None:
        for i in range(per_thread):
            await store.append(Event("loop.wrote", {"tag": tag, "i": i}), ["sub"])

    await asyncio.gather(*(task(100 + k) for k in range(8)))
    for t in threads:
        await asyncio.to_thread(t.join)

    stored = list(store.iter_events())
    assert len(stored) == 12 * per_thread
    assert len({e.event_id for e in stored}) == len(stored)
    seen: dict[int, list[int]] = {}
    for e in stored:
        seen.setdefault(e.payload["tag"], []).append(e.payload["i"])
    assert all(order == list(range(per_thread)) for order in seen.values())  # per-publisher order
    assert store.pending_count("sub") == len(stored)


async def test_group_commit_batches_concurrent_appends(db_path: Path) -> None:
    with SQLiteStore(db_path, max_batch=500) as store:
        before = store.stats()
        await asyncio.gather(*(store.append(ev(n=i), ["sub"]) for i in range(3000)))
        after = store.stats()
    transactions = after.transactions - before.transactions
    assert after.events_written == 3000
    assert transactions <= 30, f"3000 appends took {transactions} commits"
    assert after.largest_batch <= 500
    # one call_soon_threadsafe per batch for the single loop, not one per event
    assert after.loop_callbacks - before.loop_callbacks == transactions


async def test_large_batch_settles_in_chunks_without_losing_a_waiter(db_path: Path) -> None:
    from aperion_event_bus.storage._writer import SETTLE_CHUNK

    with SQLiteStore(db_path, max_batch=5 * SETTLE_CHUNK) as store:
        results = await asyncio.gather(
            *(store.append(ev(n=i), ["sub"]) for i in range(6 * SETTLE_CHUNK)),
            return_exceptions=True,
        )
        assert results == [None] * (6 * SETTLE_CHUNK)
        stats = store.stats()  # some transaction woke more than one chunk's weight
        assert stats.events_written / stats.transactions > SETTLE_CHUNK
        assert store.pending_count("sub") == 6 * SETTLE_CHUNK


async def test_writer_checkpoints_between_batches_and_bounds_the_wal(db_path: Path) -> None:
    from aperion_event_bus.storage import _wal

    wal_file = Path(str(db_path) + "-wal")
    with SQLiteStore(db_path) as store:
        writer = store._writer
        assert writer is not None
        # SQLite's own checkpoint (inside a commit) is off: the writer runs them.
        assert writer._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        page_size = writer._conn.execute("PRAGMA page_size").fetchone()[0]
        peak = 0
        for _ in range(12):  # sustained: the queue is rarely empty
            await asyncio.gather(
                *(store.append(ev(n=i, source="x" * 200), ["sub"]) for i in range(1500))
            )
            peak = max(peak, wal_file.stat().st_size)
        stats = store.stats()
        assert stats.checkpoints >= 3
        # bounded: a checkpoint at FORCE_PAGES at the latest, plus one batch of frames
        assert peak <= (_wal.FORCE_PAGES + 2000) * (page_size + 24), peak
        assert store.count_events() == 12 * 1500
        # an idle writer checkpoints what is left: leave a small commit in the WAL
        # (the last big batch may have been checkpointed already)
        for i in range(5):
            await store.append(ev(n=i, source="tail"), ["sub"])
            before = store.stats()
            if before.wal_pages:
                break
        assert before.wal_pages > 0
        deadline = time.monotonic() + 5
        while store.stats().wal_pages and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert store.stats().wal_pages == 0
        assert store.stats().checkpoints > before.checkpoints


async def test_checkpoints_without_the_shm_file_use_an_estimate(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        writer = store._writer
        assert writer is not None
        writer._wal.close()  # as if the -shm file could not be read
        before = store.stats().checkpoints
        for _ in range(4):
            await store.append_many([ev(n=i) for i in range(400)], ["sub"])
        assert store.stats().checkpoints > before
        assert store.count_events() == 1600


def test_group_commit_batches_sync_threads(store: SQLiteStore) -> None:
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            store.append_sync(ev())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = store.stats()
    assert stats.events_written == 800
    assert stats.transactions < 800
    assert store.count_events() == 800


async def test_cancelled_waiter_does_not_disturb_others(store: SQLiteStore) -> None:
    tasks = [asyncio.ensure_future(store.append(ev(n=i))) for i in range(200)]
    tasks[5].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) <= 1
    assert all(r is None for i, r in enumerate(results) if i != 5)


# -- deliveries ---------------------------------------------------------------------------


async def test_pending_deliveries_order_attempts_and_ack(store: SQLiteStore) -> None:
    events = [ev(n=i) for i in range(6)]
    for i, e in enumerate(events):
        await store.append(e, ["a", "b"] if i % 2 == 0 else ["a"])
    assert pending_ids(store, "a") == [e.event_id for e in events]
    assert pending_ids(store, "b") == [e.event_id for e in events[::2]]
    assert store.pending_count() == 9
    assert store.pending_names() == ["a", "b"]

    first = events[0].event_id
    assert await store.record_attempt(first, "a") == 1
    assert store.record_attempt_sync(first, "a") == 2
    assert await store.record_attempt(first, "b") == 1
    pend = store.pending_deliveries("a")
    assert pend[0] == (events[0], 2)
    assert [n for _, n in pend[1:]] == [0] * 5
    assert store.pending_deliveries("a", limit=2) == pend[:2]

    await store.ack(first, "a")
    store.ack_sync(events[1].event_id, "a")
    store.ack_nowait(events[2].event_id, "a")
    await store.flush()
    assert pending_ids(store, "a") == [e.event_id for e in events[3:]]
    assert pending_ids(store, "b")[0] == first  # acks are per name
    assert await store.record_attempt(first, "a") == 0  # no longer pending
    await store.ack("evt_unknown", "a")  # ignored


async def test_attempts_for_the_same_delivery_in_one_batch_each_count(store: SQLiteStore) -> None:
    e = ev()
    await store.append(e, ["a"])
    counts = await asyncio.gather(*(store.record_attempt(e.event_id, "a") for _ in range(5)))
    assert sorted(counts) == [1, 2, 3, 4, 5]


async def test_dead_moves_delivery_out_of_pending(store: SQLiteStore) -> None:
    e1, e2 = ev(n=1), ev(n=2)
    await store.append_many([e1, e2], ["a"])
    await store.record_attempt(e1.event_id, "a")
    await store.dead(e1.event_id, "a", "ValueError: boom")
    store.nack_sync(e2.event_id, "a", "gave up")
    assert store.pending_count("a") == 0
    assert store.dead_count("a") == 2
    assert store.dead_count() == 2
    assert store.count_events() == 2  # the events themselves are kept for replay


async def test_pending_deliveries_survive_reopen(db_path: Path) -> None:
    store = SQLiteStore(db_path).open()
    e1, e2 = ev(n=1), ev(n=2)
    await store.append(e1, ["a"])
    await store.append(e2, ["a"])
    await store.record_attempt(e1.event_id, "a")
    store.ack_nowait(e2.event_id, "a")
    store.close()  # flushes the queued ack
    with SQLiteStore(db_path) as again:
        assert again.pending_deliveries("a") == [(e1, 1)]


async def test_pending_deliveries_pages_through_many(store: SQLiteStore) -> None:
    events = [ev(n=i) for i in range(2500)]
    await store.append_many(events, ["a"])
    got = store.pending_deliveries("a")
    assert [e.event_id for e, _ in got] == [e.event_id for e in events]
    assert len(store.pending_deliveries("a", limit=1500)) == 1500


# -- replay ---------------------------------------------------------------------------------


@pytest.fixture
async def replay_store(store: SQLiteStore) -> tuple[SQLiteStore, list[Event]]:
    types = ["order.created", "order.item.added", "user.created", "user.deleted", "billing.charge"]
    events = [
        Event(
            types[i % len(types)],
            {"i": i},
            timestamp=1000.0 + i,
            correlation_id=f"c{i % 3}",
        )
        for i in range(50)
    ]
    await store.append_many(events)
    return store, events


def _ids(events: Any) -> list[str]:
    return [e.event_id for e in events]


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
async def test_replay_filters(
    replay_store: tuple[SQLiteStore, list[Event]], batch_size: int
) -> None:
    store, events = replay_store

    def check(expected: list[Event], **filters: Any) -> None:
        assert _ids(store.iter_events(batch_size=batch_size, **filters)) == _ids(expected)

    check(events)
    check([e for e in events if 1010.0 <= e.timestamp <= 1020.0], since=1010.0, until=1020.0)
    check([e for e in events if e.timestamp >= 1049.0], since=1049.0)
    check([e for e in events if e.timestamp <= 1000.0], until=1000.0)
    check([e for e in events if e.event_type == "user.created"], types=["user.created"])
    check([e for e in events if e.event_type.startswith("order.")], types=["order.*"])
    check([e for e in events if e.event_type.endswith(".created")], types=["*.created"])
    check(events, types=["*"])
    check([], types=[])
    check([], types=["nothing.here"])
    check([e for e in events if e.correlation_id == "c1"], correlation_id="c1")
    check(
        [e for e in events if e.correlation_id == "c2" and e.event_type.startswith("user.")],
        correlation_id="c2",
        types=["user.*"],
    )
    check(
        [e for e in events if e.event_type in ("billing.charge", "user.deleted")],
        types=["billing.charge", "user.deleted"],
    )


async def test_async_replay_matches_sync(replay_store: tuple[SQLiteStore, list[Event]]) -> None:
    store, events = replay_store
    got = [e async for e in store.aiter_events(batch_size=7)]
    assert got == events
    got = [e async for e in store.aiter_events(types=["order.*"], since=1005.0, batch_size=3)]
    assert _ids(got) == _ids(store.iter_events(types=["order.*"], since=1005.0))
    first_three = []
    async for e in store.aiter_events(batch_size=2):
        first_three.append(e)
        if len(first_three) == 3:
            break
    assert first_three == events[:3]
    assert [e async for e in store.aiter_events(types=[])] == []


async def test_replay_does_not_include_events_appended_during_iteration(
    store: SQLiteStore,
) -> None:
    await store.append_many([ev(n=i) for i in range(10)])
    seen = 0
    for _ in store.iter_events(batch_size=3):
        seen += 1
        if seen == 1:
            store.append_sync(ev(n=99))
    assert seen == 10
    assert store.count_events() == 11


# -- retention ------------------------------------------------------------------------------


async def test_compaction_by_age_never_deletes_pending_deliveries(store: SQLiteStore) -> None:
    old = [Event("order.created", {"i": i}, timestamp=time.time() - 1000) for i in range(10)]
    new = [ev(n=i) for i in range(5)]
    await store.append_many(old[:5], ["a"])
    await store.append_many(old[5:])
    await store.append_many(new)
    await store.ack(old[0].event_id, "a")
    report = store.compact(max_age_seconds=100)
    assert isinstance(report, CompactionReport)
    assert report.deleted_events == 6  # 5 without deliveries + the acknowledged one
    assert report.kept_pending == 4
    assert report.forced_events == 0
    assert report.remaining_events == 9
    assert pending_ids(store, "a") == _ids(old[1:5])
    assert _ids(store.iter_events()) == _ids(old[1:5] + new)


async def test_forced_compaction_logs_and_counts(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "4111-1111-1111-1111"
    old = [Event("pay.made", {"card": secret}, timestamp=time.time() - 1000) for _ in range(3)]
    await store.append_many(old, ["a", "b"])
    with caplog.at_level(logging.WARNING, logger="aperion_event_bus.storage"):
        report = await store.acompact(max_age_seconds=100, force=True)
    assert report.deleted_events == 3
    assert report.forced_events == 3
    assert report.forced_deliveries == 6
    assert store.pending_count() == 0
    assert "unacknowledged" in caplog.text
    assert secret not in caplog.text


async def test_forced_compaction_counts_deliveries_that_arrive_while_it_runs(
    store: SQLiteStore,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deliveries appended between the chunks of a forced compaction (new events with
    old timestamps, and new names on already stored ones) are deleted with their
    event, in its transaction, and counted: no orphan rows, no uncounted loss."""
    monkeypatch.setattr(_retention, "CHUNK", 100)  # many commits for appends to fall between
    old_ts = time.time() - 1000
    old = [Event("old.event", {"i": i}, timestamp=old_ts) for i in range(3000)]
    await store.append_many(old, ["a"])
    with caplog.at_level(logging.WARNING, logger="aperion_event_bus.storage"):
        compaction = asyncio.ensure_future(store.acompact(max_age_seconds=100, force=True))
        late: list[Event] = []
        while not compaction.done():
            late.append(Event("late.event", {"k": len(late)}, timestamp=old_ts))
            await store.append(late[-1], ["a"])
            await store.append(old[-1 - len(late)], ["b"])  # a stored event, a new name
        report = await compaction
    assert any(store.get_event(e.event_id) is None for e in late)  # some came before their chunk
    with sqlite3.connect(db_path) as conn:
        orphans = conn.execute(
            "SELECT COUNT(*) FROM deliveries WHERE seq NOT IN (SELECT seq FROM events)"
        ).fetchone()[0]
    assert orphans == 0
    assert store.pending_count() == len(store.pending_deliveries("a")) + len(
        store.pending_deliveries("b")
    )
    added = len(old) + 2 * len(late)
    assert report.forced_deliveries == added - store.pending_count()
    assert report.forced_events == report.deleted_events  # every event had a delivery
    warnings = [r.args for r in caplog.records if "unacknowledged" in r.getMessage()]
    assert isinstance(warnings[0], tuple)
    assert [sum(n) for n in zip(*warnings, strict=True)] == [
        report.forced_events,
        report.forced_deliveries,
    ]


async def test_compaction_by_size_deletes_oldest_acknowledged(store: SQLiteStore) -> None:
    events = [Event("blob.stored", {"data": "x" * 1000, "i": i}) for i in range(20)]
    await store.append_many(events)
    await store.append(events[0].replace(event_id="evt_pending_one"), ["a"])
    total = store.compact().remaining_bytes  # no policy configured: nothing deleted
    assert store.count_events() == 21
    report = store.compact(max_bytes=total // 2)
    assert report.remaining_bytes <= total // 2
    assert not report.over_budget
    remaining = _ids(store.iter_events())
    assert remaining == [*_ids(events[-len(remaining) + 1 :]), "evt_pending_one"]
    # everything left is either recent or pending; a tiny budget cannot be met without force
    report = store.compact(max_bytes=10)
    assert report.over_budget
    assert _ids(store.iter_events()) == ["evt_pending_one"]
    report = store.compact(max_bytes=10, force=True)
    assert report.forced_events == 1
    assert store.count_events() == 0


async def test_large_compaction_runs_in_chunks_beside_appends(store: SQLiteStore) -> None:
    old_ts = time.time() - 1000
    await store.append_many([Event("old.event", {"i": i}, timestamp=old_ts) for i in range(5000)])
    compaction = asyncio.ensure_future(store.acompact(max_age_seconds=10))
    await asyncio.gather(*(store.append(ev(n=i)) for i in range(100)))
    report = await compaction
    assert report.deleted_events == 5000
    assert store.count_events() == 100
    assert store.stats().transactions >= 3  # the deletion was split over several commits


async def test_periodic_retention_runs_on_the_writer(db_path: Path) -> None:
    store = SQLiteStore(db_path, max_age_seconds=60, compact_interval_seconds=0.05).open()
    try:
        await store.append_many([Event("a.b", {}, timestamp=time.time() - 120) for _ in range(5)])
        await store.append(ev())
        deadline = time.monotonic() + 5
        while store.count_events() > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert store.count_events() == 1
    finally:
        store.close()


# -- files, errors, lifecycle -------------------------------------------------------------


def test_files_are_created_with_mode_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "sub" / "events.db"
        with SQLiteStore(path) as store:
            store.append_sync(ev())
            for suffix in ("", "-wal", "-shm"):
                mode = stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
                assert mode == 0o600, (suffix, oct(mode))
    finally:
        os.umask(old)


def test_existing_file_with_loose_mode_is_tightened(db_path: Path) -> None:
    SQLiteStore(db_path).open().close()
    os.chmod(db_path, 0o644)
    with SQLiteStore(db_path):
        assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600


def test_empty_existing_file_is_initialised(db_path: Path) -> None:
    db_path.touch()
    with SQLiteStore(db_path) as store:
        store.append_sync(ev())
        assert store.count_events() == 1


def test_non_sqlite_file_is_rejected_untouched(db_path: Path) -> None:
    junk = os.urandom(4096)
    db_path.write_bytes(junk)
    with pytest.raises(StoreCorruptError) as info:
        SQLiteStore(db_path).open()
    assert str(db_path) in str(info.value)
    assert info.value.path == str(db_path)
    assert isinstance(info.value, EventBusError)
    assert db_path.read_bytes() == junk


def test_foreign_sqlite_database_is_rejected(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorruptError, match="not an aperion event store") as info:
        SQLiteStore(db_path).open()
    assert str(db_path) in str(info.value)
    conn = sqlite3.connect(db_path)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["customers"]
    conn.close()


def test_corrupted_pages_raise_store_corrupt_error(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        store.append_many_sync([ev(n=i) for i in range(2000)])
    data = bytearray(db_path.read_bytes())
    page = 4096
    for offset in range(page, len(data), page):  # scribble over every page but the header
        data[offset : offset + 200] = os.urandom(200)
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError) as info, SQLiteStore(db_path) as broken:
        list(broken.iter_events())
    assert str(db_path) in str(info.value)


def test_truncated_header_is_rejected(db_path: Path) -> None:
    db_path.write_bytes(b"SQLite format")
    with pytest.raises(StoreCorruptError):
        SQLiteStore(db_path).open()


def _run_unprivileged(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child that drops root after its imports (root ignores permissions)."""
    prelude = textwrap.dedent(
        """
        import os
        from aperion_event_bus.storage.sqlite import SQLiteStore, StoreError
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        """
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        cwd="/",
    )


def test_read_only_directory_surfaces_a_clear_error() -> None:
    base = tempfile.mkdtemp(prefix="ro-store-")
    try:
        os.chmod(base, 0o555)
        path = os.path.join(base, "events.db")
        code = textwrap.dedent(
            f"""
            try:
                SQLiteStore({path!r}).open()
            except StoreError as exc:
                print("STORE_ERROR", exc.path, exc)
            else:
                print("OPENED")
            """
        )
        result = _run_unprivileged(code)
        assert "STORE_ERROR" in result.stdout, result.stdout + result.stderr
        assert path in result.stdout
        assert not os.path.exists(path)
    finally:
        os.chmod(base, 0o755)
        for name in os.listdir(base):
            os.remove(os.path.join(base, name))
        os.rmdir(base)


async def test_disk_full_surfaces_from_append_and_nothing_is_committed(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "super-secret-payload-value"
    await store.append(ev(), ["a"])
    page_count = sqlite3.connect(store.path).execute("PRAGMA page_count").fetchone()[0]

    def limit(conn: sqlite3.Connection, runs: list[Any]) -> list[Any]:
        for pages in runs:
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return [None] * len(runs)

    writer = store._writer
    assert writer is not None
    writer._handlers["limit"] = limit  # test seam: run a pragma on the write connection
    store._call_sync("limit", page_count)
    big = [Event("blob.stored", {"secret": secret, "data": "x" * 50_000}) for _ in range(5)]
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StoreError, match="full") as info:
            await store.append_many(big, ["a"])
        results = await asyncio.gather(
            *(store.append(e, ["a"]) for e in big), return_exceptions=True
        )
    assert str(store.path) in str(info.value)
    assert all(isinstance(r, StoreError) for r in results)
    assert all(store.get_event(e.event_id) is None for e in big)
    assert store.pending_count("a") == 1
    assert store.stats().failed_transactions >= 1
    assert secret not in caplog.text

    store._call_sync("limit", 1_000_000_000)
    await store.append(big[0], ["a"])  # space is back: appends work again
    assert store.get_event(big[0].event_id) == big[0]


def test_lifecycle_errors(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    with pytest.raises(StoreClosedError, match="open"):
        store.append_sync(ev())
    with pytest.raises(StoreClosedError):
        store.count_events()
    store.open()
    assert store.open() is store  # idempotent
    assert store.is_open
    store.close()
    store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        store.append_sync(ev())
    with pytest.raises(StoreClosedError):
        store.ack_nowait("evt_x", "a")
    with pytest.raises(StoreClosedError):
        store.open()
    assert "closed" in repr(store)


async def test_async_context_manager_flushes_on_exit(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        e = ev()
        await store.append(e, ["a"])
        store.ack_nowait(e.event_id, "a")
    with SQLiteStore(db_path) as again:
        assert again.pending_count() == 0
        assert again.count_events() == 1


def test_constructor_and_url_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore.from_url("sqlite:///data/events.db?synchronous=FULL&max_batch=50")
    assert store.path == "data/events.db"
    assert store.synchronous == "FULL"
    assert store.max_batch == 50
    with store:
        store.append_sync(ev())
    assert (tmp_path / "data" / "events.db").exists()
    absolute = SQLiteStore.from_url(f"sqlite:///{tmp_path}/abs.db", max_bytes=1000)
    assert absolute.path == f"{tmp_path}/abs.db"
    assert absolute.max_bytes == 1000
    for bad in ("sqlite:///:memory:", "sqlite://", "postgres:///x", "sqlite:///x.db?nope=1"):
        with pytest.raises(ConfigurationError):
            SQLiteStore.from_url(bad)
    with pytest.raises(ConfigurationError, match="memory"):
        SQLiteStore(":memory:")
    with pytest.raises(ConfigurationError):
        SQLiteStore("x.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        SQLiteStore("x.db", max_batch=0)


# -- schema --------------------------------------------------------------------------------

_V1_FIXTURE = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
    " event_type TEXT NOT NULL, timestamp REAL NOT NULL, correlation_id TEXT, body TEXT NOT NULL)",
    "CREATE INDEX events_timestamp ON events(timestamp)",
    "CREATE INDEX events_correlation ON events(correlation_id) WHERE correlation_id IS NOT NULL",
    "CREATE TABLE deliveries (name TEXT NOT NULL, seq INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (name, seq)) WITHOUT ROWID",
    "CREATE TABLE dlq (pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
    " timestamp REAL NOT NULL, event_type TEXT NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX dlq_timestamp ON dlq(timestamp)",
    "INSERT INTO meta(key, value) VALUES ('schema_version', '1')",
]


def _write_v1_fixture(path: Path, events: list[Event]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in _V1_FIXTURE:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    for e in events:
        conn.execute(
            "INSERT INTO events(event_id, event_type, timestamp, correlation_id, body)"
            " VALUES (?, ?, ?, ?, ?)",
            (e.event_id, e.event_type, e.timestamp, e.correlation_id, e.to_jsonl()),
        )
    conn.execute("INSERT INTO deliveries(name, seq, attempts) VALUES ('billing', 2, 3)")
    conn.commit()
    conn.close()


def test_migrates_a_version_1_file(db_path: Path) -> None:
    events = [ev(n=i, correlation_id="c") for i in range(3)]
    _write_v1_fixture(db_path, events)
    with SQLiteStore(db_path) as store:
        assert store.previous_schema_version == 1
        assert list(store.iter_events()) == events
        assert store.pending_deliveries("billing") == [(events[1], 3)]
        store.dead_sync(events[1].event_id, "billing", "needs the v2 table")
        assert store.dead_count() == 1
        report = store.compact(max_bytes=1)  # v2 sizes were backfilled
        assert report.deleted_events == 3
        assert report.deleted_bytes == sum(len(e.to_jsonl().encode()) for e in events)
    conn = sqlite3.connect(db_path)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    conn.close()
    assert int(version) == SCHEMA_VERSION == 2
    with SQLiteStore(db_path) as again:
        assert again.previous_schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(db_path: Path) -> None:
    SQLiteStore(db_path).open().close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"newer|upgrade") as info:
        SQLiteStore(db_path).open()
    assert str(db_path) in str(info.value)


def test_new_file_is_created_at_the_current_version(db_path: Path) -> None:
    with SQLiteStore(db_path) as store:
        assert store.previous_schema_version == 0
        assert store.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# -- DLQ backend ----------------------------------------------------------------------------


def _failed(i: int, *, reason: str = "handler_error", ts: float | None = None) -> Any:
    from aperion_event_bus.dlq import FailedEvent

    return FailedEvent(
        id=f"dlq_{i}",
        event=Event("order.created" if i % 2 else "user.deleted", {"i": i}),
        reason=reason,  # type: ignore[arg-type]
        error=f"ValueError: {i}",
        handler_name="h",
        timestamp=ts if ts is not None else 1000.0 + i,
        metadata={"k": i},
    )


def test_dlq_backend_protocol(db_path: Path) -> None:
    from aperion_event_bus.dlq import DLQBackend

    with SQLiteStore(db_path) as store:
        dlq = store.dlq_backend()
        assert isinstance(dlq, DLQBackend)
        assert dlq.size() == 0
        assert dlq.oldest() is None
        assert dlq.list() == []
        entries = [_failed(i) for i in range(5)]
        entries.append(_failed(5, reason="handler_timeout"))
        for entry in entries:
            dlq.put(entry)
        assert dlq.size() == 6
        got = dlq.get("dlq_3")
        assert got is not None and got.to_dict() == entries[3].to_dict()
        assert dlq.get("missing") is None
        assert [e.id for e in dlq.list()] == [f"dlq_{i}" for i in reversed(range(6))]
        assert [e.id for e in dlq.list(limit=2)] == ["dlq_5", "dlq_4"]
        assert dlq.list(limit=0) == []
        assert [e.id for e in dlq.list(event_type="order.created")] == ["dlq_5", "dlq_3", "dlq_1"]
        assert [e.id for e in dlq.list(reason="handler_timeout")] == ["dlq_5"]
        oldest = dlq.oldest()
        assert oldest is not None and oldest.id == "dlq_0"

        changed = entries[0].copy()
        changed.retry_count = 2
        dlq.update(changed)  # in place: still the oldest
        updated = dlq.oldest()
        assert updated is not None and updated.retry_count == 2
        dlq.update(_failed(99))  # unknown ids are ignored
        assert dlq.size() == 6
        dlq.put(entries[0])  # a re-put moves it to the newest end
        assert dlq.list(limit=1)[0].id == "dlq_0"

        assert dlq.remove("dlq_1") is True
        assert dlq.remove("dlq_1") is False
        assert dlq.clear_older_than(1003.0) == 2  # dlq_0 and dlq_2
        assert dlq.size() == 3

    with SQLiteStore(db_path) as again:  # entries persist
        dlq = again.dlq_backend()
        assert sorted(e.id for e in dlq.list()) == ["dlq_3", "dlq_4", "dlq_5"]
        assert dlq.clear() == 3
        assert dlq.size() == 0
