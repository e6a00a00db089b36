"""The 1.x JSONL audit log: redaction, rotation, reading, damage tolerance, modes."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aperion_event_bus._frozen import FrozenDict
from aperion_event_bus.errors import ConfigurationError
from aperion_event_bus.events import Event, _make_event
from aperion_event_bus.storage import AuditLogger
from aperion_event_bus.storage.audit_log import iter_lines_reversed

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


class FakeRedactor:
    """Deterministic stand-in for the redaction engine: emails and password keys."""

    def redact_string(self, value: str) -> str:
        return EMAIL.sub("[REDACTED_EMAIL]", value)

    def redact(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: "[REDACTED]" if "password" in str(k).lower() else self.redact(v)
                for k, v in data.items()
            }
        if isinstance(data, (list, tuple)):
            return [self.redact(v) for v in data]
        if isinstance(data, str):
            return self.redact_string(data)
        return data


class BrokenRedactor(FakeRedactor):
    def redact(self, data: Any) -> Any:
        raise RuntimeError("redactor exploded")

    def redact_string(self, value: str) -> str:
        raise RuntimeError("redactor exploded")


def _real_redactor() -> Any:
    try:
        module = importlib.import_module("aperion_event_bus.redaction")
        return module.Redactor
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"aperion_event_bus.redaction.Redactor not available yet: {exc}")


def make_logger(path: Path | None, **kwargs: Any) -> AuditLogger:
    kwargs.setdefault("redactor", FakeRedactor())
    return AuditLogger(path, **kwargs)


def ev(i: int, event_type: str = "test.happened", **payload: Any) -> Event:
    return Event(event_type, {"i": i, **payload}, timestamp=1_700_000_000 + i, source="tests")


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- basic writing/reading


def test_line_is_on_disk_when_log_event_returns(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "events.jsonl"
    log = make_logger(path)
    event = ev(1)
    log.log_event(event)
    lines = lines_of(path)  # read through a separate handle, right away
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert list(record)[:6] == [
        "event_type",
        "payload",
        "timestamp",
        "event_id",
        "source",
        "correlation_id",
    ]
    assert record["event_id"] == event.event_id
    assert Event.from_jsonl(lines[0]) == event
    log.close()


def test_read_events_newest_first_with_filters(tmp_path: Path) -> None:
    log = make_logger(tmp_path / "a.jsonl")
    for i in range(10):
        log.log_event(ev(i, "a.one" if i % 2 else "a.two"))
    assert [e.payload["i"] for e in log.read_events()] == list(range(9, -1, -1))
    assert [e.payload["i"] for e in log.read_events(limit=3)] == [9, 8, 7]
    assert [e.payload["i"] for e in log.read_events(event_type="a.two")] == [8, 6, 4, 2, 0]
    assert [e.payload["i"] for e in log.read_events(since=1_700_000_007)] == [9, 8, 7]
    assert [e.payload["i"] for e in log.read_events(until=1_700_000_001)] == [1, 0]
    assert log.read_events(limit=0) == []
    assert len(log.read_events(limit=None)) == 10


def test_read_by_correlation_id(tmp_path: Path) -> None:
    log = make_logger(tmp_path / "a.jsonl")
    log.log_event(Event("a.b", {}, correlation_id="c-1"))
    log.log_event(Event("a.b", {}, correlation_id="c-2"))
    assert [e.correlation_id for e in log.read_events(correlation_id="c-1")] == ["c-1"]


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = make_logger(path, enabled=False)
    log.log_event(ev(1))
    assert not path.exists()
    assert log.get_stats()["total_events_logged"] == 0


def test_existing_log_is_appended_and_readable_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    first = make_logger(path)
    first.log_event(ev(1))
    first.close()
    second = make_logger(path)
    second.log_event(ev(2))
    assert [e.payload["i"] for e in second.read_events()] == [2, 1]


def test_logging_after_close_reopens(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with make_logger(path) as log:
        log.log_event(ev(1))
    log.log_event(ev(2))
    assert len(lines_of(path)) == 2


def test_file_deleted_externally_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = make_logger(path)
    log.log_event(ev(1))
    path.unlink()
    log.log_event(ev(2))
    assert [e.payload["i"] for e in log.read_events()] == [2]


# ---------------------------------------------------------------- redaction


def test_payload_and_source_are_redacted_envelope_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = make_logger(path)
    event = Event(
        "user.signed_up",
        {"email_note": "write to bob@example.com", "password": "hunter2", "n": 3},
        source="svc for alice@example.org",
        correlation_id="corr-1",
    )
    log.log_event(event)
    text = path.read_text()
    assert "bob@example.com" not in text
    assert "alice@example.org" not in text
    assert "hunter2" not in text
    (read,) = log.read_events()
    assert read.payload == {
        "email_note": "write to [REDACTED_EMAIL]",
        "password": "[REDACTED]",
        "n": 3,
    }
    assert read.source == "svc for [REDACTED_EMAIL]"
    assert (read.event_id, read.correlation_id, read.timestamp) == (
        event.event_id,
        "corr-1",
        event.timestamp,
    )


def test_real_redactor_by_default(tmp_path: Path) -> None:
    real = _real_redactor()
    path = tmp_path / "a.jsonl"
    log = AuditLogger(path)
    assert isinstance(log.redactor, real)
    log.log_event(
        Event("user.login", {"contact": "mail bob@example.com", "password": "hunter2secret"})
    )
    text = path.read_text()
    assert "bob@example.com" not in text
    assert "hunter2secret" not in text
    assert "[REDACTED_EMAIL]" in text


def test_missing_redaction_engine_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aperion_event_bus.redaction", None)
    with pytest.raises(ConfigurationError, match=r"redactor="):
        AuditLogger(None)


# ---------------------------------------------------------------- unserialisable payloads


def test_unserialisable_payload_is_logged_in_fallback_form(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = make_logger(path)

    class Opaque:
        def __repr__(self) -> str:
            return "Opaque(owner=carol@example.com)"

    # Event() refuses such payloads at publish; build one past that check.
    bad = _make_event("odd.thing", FrozenDict({"obj": Opaque()}), 1.0, "evt_bad", "src")
    log.log_event(bad)
    log.log_event(ev(2))
    events = log.read_events()
    assert [e.event_id for e in events][1] == "evt_bad"
    payload = events[1].payload
    assert set(payload) == {"_unserialisable", "_error"}
    assert "Opaque(owner=[REDACTED_EMAIL])" in payload["_unserialisable"]
    assert "carol@example.com" not in path.read_text()
    assert "SerializationError" in payload["_error"] or "TypeError" in payload["_error"]
    assert log.get_stats()["serialization_fallbacks"] == 1
    assert log.get_stats()["total_events_logged"] == 2


def test_a_lone_surrogate_is_logged_and_read_back(tmp_path: Path) -> None:
    """A string with no UTF-8 form is written as its JSON escape (the line stays valid
    JSON), not dropped with a UnicodeEncodeError."""
    path = tmp_path / "x.jsonl"
    log = make_logger(path)
    log.log_event(ev(1, s="a \ud800 b", nested={"k \udfff": ["\udc80"]}))
    log.log_event(ev(2))
    assert b"\\ud800" in path.read_bytes()
    got = log.read_events()
    assert [e.payload["i"] for e in got] == [2, 1]
    assert got[1].payload["s"] == "a \ud800 b"
    assert got[1].payload["nested"] == {"k \udfff": ["\udc80"]}
    assert log.get_stats()["write_errors"] == 0


def test_huge_unserialisable_repr_is_truncated(tmp_path: Path) -> None:
    log = make_logger(tmp_path / "a.jsonl")

    class Big:
        def __repr__(self) -> str:
            return "x" * 100_000

    log.log_event(_make_event("odd.thing", FrozenDict({"obj": Big()}), 1.0, "evt_big"))
    (read,) = log.read_events()
    assert len(read.payload["_unserialisable"]) < 3000


def test_failing_redactor_never_leaks_the_payload(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLogger(path, redactor=BrokenRedactor())
    log.log_event(Event("a.b", {"password": "hunter2"}, source="s"))
    text = path.read_text()
    assert "hunter2" not in text
    (read,) = log.read_events()
    assert read.payload["_unserialisable"] == "<redaction failed>"
    assert log.get_stats()["serialization_fallbacks"] == 1


# ---------------------------------------------------------------- file modes


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_log_and_rotated_files_are_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        path = tmp_path / "a.jsonl"
        log = make_logger(path, max_size_bytes=300, max_files=3)
        for i in range(20):
            log.log_event(ev(i))
    finally:
        os.umask(old_umask)
    files = [path, *sorted(tmp_path.glob("a.*.jsonl"))]
    assert len(files) == 4
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_existing_world_readable_log_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("")
    path.chmod(0o644)
    make_logger(path).log_event(ev(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---------------------------------------------------------------- rotation


def test_rotation_respects_max_size_and_max_files(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    limit = 1000
    log = make_logger(path, max_size_bytes=limit, max_files=3)
    line_len = len(ev(10).to_jsonl()) + 1
    for i in range(10, 100):
        log.log_event(ev(i))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["x.1.jsonl", "x.2.jsonl", "x.3.jsonl", "x.jsonl"]
    per_file = limit // line_len
    for p in tmp_path.iterdir():
        size = p.stat().st_size
        assert size <= limit
        if p.name != "x.jsonl":  # full files are filled as far as whole lines allow
            assert size > limit - line_len
            assert len(lines_of(p)) == per_file
    # The kept events are exactly the newest ones, contiguous and in order.
    got = [e.payload["i"] for e in log.read_events(limit=None)]
    assert got == list(range(99, 99 - len(got), -1))
    assert len(got) == 3 * per_file + len(lines_of(path))
    stats = log.get_stats()
    assert stats["rotated_files"] == 3
    assert stats["rotations"] >= 3
    assert stats["log_file_size"] == path.stat().st_size


def test_line_larger_than_limit_gets_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    log = make_logger(path, max_size_bytes=200, max_files=5)
    log.log_event(ev(1))
    log.log_event(ev(2, blob="y" * 500))
    assert len(lines_of(path)) == 1
    assert path.stat().st_size > 200
    assert [e.payload["i"] for e in map(Event.from_jsonl, lines_of(tmp_path / "x.1.jsonl"))] == [1]
    log.log_event(ev(3))  # the oversized file is full: rotate again
    assert [e.payload["i"] for e in log.read_events()] == [3, 2, 1]
    assert len(lines_of(path)) == 1


def test_max_files_zero_keeps_no_backups(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    log = make_logger(path, max_size_bytes=300, max_files=0)
    for i in range(20):
        log.log_event(ev(i))
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]
    assert path.stat().st_size <= 300
    assert log.read_events(limit=1)[0].payload["i"] == 19


def test_rotation_names_for_other_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = make_logger(path, max_size_bytes=200, max_files=2)
    for i in range(10):
        log.log_event(ev(i))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.1.log", "audit.2.log", "audit.log"]


def test_invalid_configuration() -> None:
    with pytest.raises(ConfigurationError):
        AuditLogger(None, redactor=FakeRedactor(), max_size_bytes=0)
    with pytest.raises(ConfigurationError):
        AuditLogger(None, redactor=FakeRedactor(), max_files=-1)


# ---------------------------------------------------------------- clear


def test_clear_removes_rotated_files_too(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    for n in (4, 5):  # x.4, x.5: left over from a larger max_files
        (tmp_path / f"x.{n}.jsonl").write_text("left over from a larger max_files\n")
    (tmp_path / "other.jsonl").write_text("not ours\n")
    (tmp_path / "x.bak.jsonl").write_text("not a rotation\n")
    log = make_logger(path, max_size_bytes=300, max_files=3)
    for i in range(30):
        log.log_event(ev(i))
    assert log.clear() is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl", "x.bak.jsonl"]
    assert log.read_events() == []
    assert log.get_stats()["total_events_logged"] == 0
    log.log_event(ev(100))
    assert [e.payload["i"] for e in log.read_events()] == [100]


def test_look_alike_files_are_neither_read_nor_cleared(tmp_path: Path) -> None:
    """Only the names rotation writes are the logger's: x.1 ... x.{max_files}, and
    leftovers of a larger max_files that run on from there without a gap."""
    path = tmp_path / "x.jsonl"
    foreign = ["x.20240101.jsonl", "x.01.jsonl", "x.0.jsonl", "x.7.jsonl", "x.1e3.jsonl"]
    for name in foreign:  # each holds a valid event line
        (tmp_path / name).write_text(ev(-1).to_jsonl() + "\n")
    (tmp_path / "x.4.jsonl").write_text(ev(-2).to_jsonl() + "\n")  # a leftover: ours
    log = make_logger(path, max_size_bytes=300, max_files=3)
    for i in range(30):
        log.log_event(ev(i))
    got = [e.payload["i"] for e in log.read_events(limit=None)]
    assert -1 not in got and got[-1] == -2
    assert log.get_stats()["rotated_files"] == 4
    assert log.clear() is True
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(foreign)


def test_bus_clear_log_keeps_look_alike_files(tmp_path: Path) -> None:
    from aperion_event_bus import EventBus

    path = tmp_path / "ev.jsonl"
    precious = tmp_path / "ev.20240101.jsonl"
    precious.write_text(ev(-1).to_jsonl() + "\n")
    bus = EventBus(event_log_path=str(path), max_log_size_bytes=2000, max_log_files=3)
    try:
        for i in range(50):
            bus.emit("a.b", {"i": i})
        assert all(e.payload["i"] >= 0 for e in bus.get_events(limit=1000))
        assert bus.clear_log() is True
        assert [p.name for p in tmp_path.iterdir()] == [precious.name]
    finally:
        bus.shutdown(2)


# ---------------------------------------------------------------- reading far back


def test_reads_beyond_1000_lines_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    log = make_logger(path, max_size_bytes=40_000, max_files=20)
    for i in range(2500):
        log.log_event(ev(i, "x.even" if i % 2 == 0 else "x.odd"))
    assert log.get_stats()["rotated_files"] >= 3
    everything = log.read_events(limit=None)
    assert [e.payload["i"] for e in everything] == list(range(2499, -1, -1))
    # The oldest events sit in the oldest rotated file, far beyond the newest 1000 lines.
    assert [e.payload["i"] for e in log.read_events(since=0, until=1_700_000_001)] == [1, 0]
    assert len(log.read_events(event_type="x.even", limit=2000)) == 1250
    assert log.read_events(limit=1500)[-1].payload["i"] == 1000


# ---------------------------------------------------------------- damaged and foreign lines


def test_torn_last_line_is_skipped_and_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    log = make_logger(path)
    log.log_event(ev(1))
    log.log_event(ev(2))
    log.close()
    torn = ev(3).to_jsonl()[:25]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(torn)  # a crash mid-write: no newline
    assert [e.payload["i"] for e in log.read_events()] == [2, 1]
    assert log.get_stats()["last_read_skipped_lines"] == 1

    log2 = make_logger(path)  # a restart appends after the torn fragment
    log2.log_event(ev(4))
    assert [e.payload["i"] for e in log2.read_events()] == [4, 2, 1]
    assert log2.get_stats()["torn_lines_repaired"] == 1
    assert lines_of(path)[2] == torn


_DEEP = b'{"event_type": "a.b", "payload": {"k": %s%s}, "timestamp": 1, "event_id": "e"}\n' % (
    b"[" * 1200,
    b"]" * 1200,
)


def test_foreign_lines_never_hide_events(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    log = make_logger(path)
    log.log_event(ev(1))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("plain text from another tool\n")
        fh.write("[1, 2, 3]\n")
        fh.write('{"event_type": "a.b"}\n')  # JSON object, not an event
        fh.write('{"event_type": "a.b", "payload": [], "timestamp": 1, "event_id": "e"}\n')
        fh.write("\n   \n")
        fh.write("\xff\xfe not utf-8 either? \n")
    with open(path, "ab") as fb:
        fb.write(b"\xff\xfe\x00garbage\n")
        fb.write(_DEEP)  # nested deeper than the JSON parser's recursion limit
        fb.write(b'{"event_type": "a.b", "payload": {}, "timestamp": 1%s, "event_id": "e"}\n' % (
            b"0" * 400  # too large for a float
        ))
    log.log_event(ev(2))
    assert [e.payload["i"] for e in log.read_events()] == [2, 1]
    stats = log.get_stats()
    assert stats["last_read_skipped_lines"] == 8
    assert stats["skipped_lines"] == 8


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.just(10**400) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
_event_like = st.fixed_dictionaries(
    {"event_type": st.sampled_from(["a.b", "", 5]) | _json_values, "payload": _json_values},
    optional={
        "timestamp": st.just(1.0) | _json_values,
        "event_id": st.just("evt_x") | _json_values,
        "correlation_id": _json_values,
    },
).map(lambda d: json.dumps(d, allow_nan=True).encode())


def _nested_event(depth: int, lists: bool) -> bytes:
    inner = b"[" * depth + b"]" * depth if lists else b'{"k": ' * depth + b"1" + b"}" * depth
    return b'{"event_type": "a.b", "payload": {"k": %s}, "timestamp": 1, "event_id": "e"}' % inner


_nested = st.builds(_nested_event, st.integers(1, 3000), st.booleans())
_foreign_line = (st.binary(max_size=60) | _event_like | _nested).map(
    lambda b: b.replace(b"\n", b"")
)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.none() | _foreign_line, max_size=12))
def test_foreign_lines_never_hide_events_whatever_they_hold(lines: list[bytes | None]) -> None:
    """Real events (None in ``lines``) between arbitrary foreign lines: every real
    event is read, in order, and every other non-blank line is an event or counted."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jsonl"
        log = make_logger(path)
        real: list[str] = []
        for line in lines:
            if line is None:
                event = ev(len(real), "real.event")
                real.append(event.event_id)
                log.log_event(event)
            else:
                with open(path, "ab") as fb:
                    fb.write(line + b"\n")
        got = log.read_events(limit=None)
        assert [e.event_id for e in got if e.event_id in real] == real[::-1]
        written = sum(1 for line in lines if line is None or line.strip())
        assert len(got) + log.get_stats()["last_read_skipped_lines"] == written
        log.close()


def test_corrupt_rotated_file_does_not_hide_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    log = make_logger(path, max_size_bytes=300, max_files=5)
    for i in range(12):
        log.log_event(ev(i))
    (tmp_path / "x.1.jsonl").write_bytes(b"\x00\x01binary junk without newline")
    got = [e.payload["i"] for e in log.read_events(limit=None)]
    assert got[0] == 11
    assert got == sorted(got, reverse=True)
    assert len(got) > len(lines_of(path))


# ---------------------------------------------------------------- errors, threads, memory


def test_write_errors_are_counted_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    log = make_logger(blocker / "a.jsonl")
    with caplog.at_level("WARNING", logger="aperion_event_bus.audit"):
        log.log_event(ev(1))
        log.log_event(ev(2))
    stats = log.get_stats()
    assert stats["write_errors"] == 2
    assert stats["total_events_logged"] == 0
    assert stats["last_error"]
    assert any("audit log write" in r.getMessage() for r in caplog.records)
    assert log.read_events() == []


def test_concurrent_logging_with_rotation(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    limit = 20_000
    log = make_logger(path, max_size_bytes=limit, max_files=50)
    threads_n, per_thread = 8, 150

    def worker(t: int) -> None:
        for i in range(per_thread):
            log.log_event(Event("t.work", {"t": t, "i": i}))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = [path, *tmp_path.glob("x.*.jsonl")]
    assert all(p.stat().st_size <= limit for p in files)
    assert 3 <= len(files) < 50  # rotated, but nothing deleted yet
    events = log.read_events(limit=None)
    assert len(events) == threads_n * per_thread
    assert log.get_stats()["last_read_skipped_lines"] == 0
    for t in range(threads_n):  # each thread's events appear in its own order
        mine = [e.payload["i"] for e in events if e.payload["t"] == t]
        assert mine == list(range(per_thread - 1, -1, -1))


def test_memory_mode_without_path(tmp_path: Path) -> None:
    log = make_logger(None, memory_buffer_size=5)
    for i in range(8):
        log.log_event(ev(i, note=f"user{i}@example.com"))
    got = log.read_events()
    assert [e.payload["i"] for e in got] == [7, 6, 5, 4, 3]
    assert got[0].payload["note"] == "[REDACTED_EMAIL]"
    assert [e.payload["i"] for e in log.read_events(since=1_700_000_006)] == [7, 6]
    stats = log.get_stats()
    assert stats["storage"] == "memory"
    assert stats["log_path"] is None
    assert stats["buffered_events"] == 5
    assert stats["total_events_logged"] == 8
    assert log.clear() is True
    assert log.read_events() == []
    assert list(tmp_path.iterdir()) == []


def test_memory_mode_can_keep_nothing() -> None:
    log = make_logger(None, memory_buffer_size=0)
    log.log_event(ev(1))
    assert log.read_events() == []


def test_stats_keys(tmp_path: Path) -> None:
    log = make_logger(tmp_path / "x.jsonl")
    log.log_event(ev(1))
    log.flush()
    log.flush(fsync=True)
    stats = log.get_stats()
    for key in (
        "enabled",
        "log_path",
        "total_events_logged",
        "log_file_size",
        "rotated_files",
        "write_errors",
        "serialization_fallbacks",
        "skipped_lines",
    ):
        assert key in stats
    assert stats["total_events_logged"] == 1
    assert stats["log_file_size"] == (tmp_path / "x.jsonl").stat().st_size
    assert stats["redactor"] == "FakeRedactor"


def test_1x_import_path() -> None:
    _real_redactor()
    module = importlib.import_module("aperion_event_bus.audit")
    assert module.AuditLogger is AuditLogger
    assert module.Redactor is importlib.import_module("aperion_event_bus.redaction").Redactor


# ---------------------------------------------------------------- the backwards reader


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    block=st.integers(min_value=1, max_value=64),
    trailing_newline=st.booleans(),
)
def test_iter_lines_reversed_matches_forward_split(
    lines: list[bytes], block: int, trailing_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    expected = [line for line in data.split(b"\n") if line.strip()][::-1]
    assert list(iter_lines_reversed(io.BytesIO(data), len(data), block)) == expected
