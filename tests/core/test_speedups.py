"""The optional C accelerator: in use when built, and identical to its Python twins.

``make test`` runs the suite twice: with the accelerator (these tests check that a
built module is really in use, so CI cannot silently test pure Python only) and
with ``APERION_EVENT_BUS_NO_EXTENSIONS=1`` (the pure-Python reference).
"""

from __future__ import annotations

import importlib.machinery
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

import aperion_event_bus
from aperion_event_bus import _accel, _frozen, _ids, events
from aperion_event_bus._frozen import FrozenDict, FrozenList
from aperion_event_bus.errors import SerializationError
from aperion_event_bus.events import Event

PACKAGE_DIR = Path(aperion_event_bus.__file__).parent
BUILT = [
    p
    for p in PACKAGE_DIR.iterdir()
    if p.name.startswith("_speedups.")
    and p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
]

needs_c = pytest.mark.skipif(not _accel.ACCELERATED, reason="C accelerator not in use")


def test_accelerator_in_use_when_built() -> None:
    """A built extension must be in use unless explicitly disabled."""
    if _accel.DISABLED:
        assert not aperion_event_bus.ACCELERATED
        assert _ids.new_event_id is _ids._py_new_event_id
        assert _frozen.freeze_payload is _frozen._py_freeze_payload
        assert events._make_event is events._FastEvent
        return
    if os.environ.get("APERION_EVENT_BUS_REQUIRE_EXTENSIONS", "") not in ("", "0"):
        assert BUILT, f"no compiled _speedups module in {PACKAGE_DIR}"
    if not BUILT:
        pytest.skip("the C accelerator was not built (no compiler?)")
    assert aperion_event_bus.ACCELERATED, f"{BUILT[0].name} is built but failed to load"
    sp = _accel.speedups
    assert sp is not None
    assert _ids.new_event_id is sp.new_event_id
    assert _ids.event_id_at is sp.event_id_at
    assert _ids.new_id is sp.new_id
    assert _frozen.freeze_payload is sp.freeze_payload
    assert events._make_event is sp.make_event


def test_disabled_by_environment_variable() -> None:
    """The variable is read at import: a fresh interpreter with it set is pure Python."""
    import subprocess
    import sys

    code = "import aperion_event_bus as a; print(a.ACCELERATED)"
    env = {**os.environ, "APERION_EVENT_BUS_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ ids
@needs_c
@pytest.mark.parametrize("now", [0.0, 1.5, 1e-4, 1_700_000_000.123456, 2e13, 10, -1.5, 5e18])
def test_event_id_text_matches_twin(now: float) -> None:
    c, py = _ids.event_id_at(now), _ids._py_event_id_at(now)
    assert len(c) == len(py)
    # same layout; the counter differs by exactly one step (one shared counter)
    assert c[: len(c) - 20] == py[: len(py) - 20]
    assert c[-12:] == py[-12:]
    assert int(py[-20:-12], 16) == (int(c[-20:-12], 16) + 1) & 0xFFFFFFFF


@needs_c
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_event_id_of_non_finite_time_raises_like_twin(bad: float) -> None:
    with pytest.raises((ValueError, OverflowError)) as c_err:
        _ids.event_id_at(bad)
    with pytest.raises((ValueError, OverflowError)) as py_err:
        _ids._py_event_id_at(bad)
    assert type(c_err.value) is type(py_err.value)
    assert str(c_err.value) == str(py_err.value)


@needs_c
def test_generic_ids_match_twin_and_share_the_counter() -> None:
    for prefix in ("sub_", "dlq_", "évt_", ""):
        c, py = _ids.new_id(prefix), _ids._py_new_id(prefix)
        assert c.startswith(prefix) and py.startswith(prefix)
        assert len(c) == len(py) == len(prefix) + 19 + 12
        assert c[-12:] == py[-12:] == _ids._SOURCE.node
        assert int(py[-20:-12], 16) == (int(c[-20:-12], 16) + 1) & 0xFFFFFFFF
        assert abs(int(c[len(prefix) : len(prefix) + 11], 16) - time.time_ns() // 1_000_000) < 5_000


@needs_c
def test_event_ids_interleaved_with_twin_stay_unique_and_ordered() -> None:
    made = []
    for i in range(3000):
        made.append(_ids.new_event_id() if i % 3 else _ids._py_new_event_id())
    assert len(set(made)) == len(made)
    assert made == sorted(made)


@needs_c
def test_fork_reseeds_the_c_counter_and_node() -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.write(
                w, f"{_ids.new_event_id()} {_ids._py_new_event_id()} {_ids._SOURCE.node}".encode()
            )
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        c_id, py_id, node = fh.read().split()
    os.waitpid(pid, 0)
    assert node != _ids._SOURCE.node
    assert c_id[-12:] == py_id[-12:] == node


# -------------------------------------------------------------- payload
class _Mapping(dict[str, Any]):
    pass


@needs_c
@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"i": 1, "s": "x", "f": 1.5, "b": True, "n": None},
        {"nested": {"a": [1, 2, {"b": (3, 4)}]}},
        {1: "int key"},
        {"e": {1, 2}},
        {"big": 2**100},
        _Mapping(a=1),
        FrozenDict(a=1),
        {"ba": bytearray(b"x")},
    ],
)
def test_freeze_payload_matches_twin(payload: Any) -> None:
    c, py = _frozen.freeze_payload(payload), _frozen._py_freeze_payload(payload)
    assert type(c) is type(py) is FrozenDict
    assert c == py
    assert c is not payload or type(payload) is FrozenDict
    if type(payload) is FrozenDict:
        assert c is payload
    with pytest.raises(TypeError):
        c["new"] = 1  # type: ignore[index]


@needs_c
def test_freeze_payload_copies_a_flat_dict() -> None:
    payload = {"i": 1}
    frozen = _frozen.freeze_payload(payload)
    payload["i"] = 2
    assert frozen == {"i": 1}


@needs_c
def test_freeze_payload_nested_lists_become_frozen() -> None:
    frozen = _frozen.freeze_payload({"l": [1, [2]]})
    assert type(frozen["l"]) is FrozenList


class _Opaque:
    pass


@needs_c
@pytest.mark.parametrize(
    "payload",
    [
        {"x": _Opaque()},
        {"f": float("nan")},  # a flat dict: the C scan hands non-finite floats to the twin
        {"s": "x", "f": float("inf")},
        {"f": -float("inf"), "i": 1},
    ],
)
def test_freeze_payload_errors_match_twin(payload: dict[str, Any]) -> None:
    with pytest.raises(SerializationError) as c_err:
        _frozen.freeze_payload(payload)
    with pytest.raises(SerializationError) as py_err:
        _frozen._py_freeze_payload(payload)
    assert str(c_err.value) == str(py_err.value)
    assert c_err.value.path == py_err.value.path


# ---------------------------------------------------------------- events
@needs_c
def test_make_event_matches_twin() -> None:
    fields = ("a.b", FrozenDict(i=1), 1.25, "evt_x", "src", "corr", "cause", "tp", "ts")
    for n in range(4, 10):
        c, py = events._make_event(*fields[:n]), events._FastEvent(*fields[:n])
        assert type(c) is type(py) is Event
        assert c == py and repr(c) == repr(py)
        with pytest.raises(AttributeError):
            c.source = "x"  # type: ignore[misc]
    kw = events._make_event("a.b", FrozenDict(), 1.0, "evt_y", correlation_id="c")
    assert kw.correlation_id == "c" and kw.source is None


@needs_c
def test_build_event_matches_python_envelope() -> None:
    sp = _accel.speedups
    assert sp is not None
    before = time.time()
    ev = sp.build_event("a.b", {"i": 1}, "src", None, "cause")
    assert before <= ev.timestamp <= time.time()
    assert ev.event_id[4:15] == f"{int(ev.timestamp * 1000):011x}"
    assert ev.correlation_id == ev.event_id
    assert (ev.event_type, dict(ev.payload), ev.source, ev.causation_id) == (
        "a.b",
        {"i": 1},
        "src",
        "cause",
    )
    assert ev.traceparent is None and ev.tracestate is None
    assert type(ev.payload) is FrozenDict
    assert sp.build_event("a.b", {}, None, "corr", None).correlation_id == "corr"


@needs_c
def test_value_events_are_not_gc_tracked() -> None:
    """An event of strings and a scalar payload cannot be in a reference cycle: the
    collector does not track it (a large backlog costs no GC time); anything that
    could hold a container stays tracked."""
    import gc

    sp = _accel.speedups
    assert sp is not None
    flat = sp.build_event("a.b", {"i": 1, "s": "x", "f": 1.5, "n": None, "b": True}, "src", None, None)
    assert not gc.is_tracked(flat) and not gc.is_tracked(flat.payload)
    assert not gc.is_tracked(sp.build_event("a.b", {}, None, "corr", "cause"))
    nested = sp.build_event("a.b", {"tags": ["a"], "inner": {"k": 1}}, None, None, None)
    assert gc.is_tracked(nested)
    already = FrozenDict(i=1)
    assert gc.is_tracked(already)  # a FrozenDict made in Python: checked, then untracked
    assert not gc.is_tracked(sp.build_event("a.b", already, None, None, None))

    class Text(str):
        pass

    assert gc.is_tracked(sp.build_event("a.b", {}, Text("src"), None, None))  # a subclass may hold anything


@needs_c
def test_forcing_a_container_into_an_untracked_payload_tracks_it_again() -> None:
    """Payloads are read-only; bypassing that with dict.__setitem__ still leaves the
    payload collectable (dict re-tracks itself), and a cycle through it is freed."""
    import gc
    import weakref

    sp = _accel.speedups
    assert sp is not None
    ev = sp.build_event("a.b", {"i": 1}, None, None, None)
    payload = ev.payload

    class Box:
        pass

    box = Box()
    box.payload = payload  # type: ignore[attr-defined]
    dict.__setitem__(payload, "box", box)  # payload -> box -> payload
    assert gc.is_tracked(payload)
    ref = weakref.ref(box)
    del ev, payload, box
    gc.collect()
    assert ref() is None


# ----------------------------------------------------------- publish_nowait
_tag: Any = __import__("contextvars").ContextVar("speedups_tag", default="-")


def _mailbox_shape(bus: Any, sub: Any) -> list[str]:
    from contextvars import Context

    lane = sub._lane
    return ["ctx" if type(x) is Context else type(x).__name__ for x in lane.mailbox]


def _both_paths() -> list[str]:
    return ["c", "python"] if _accel.ACCELERATED else ["python"]


def _publisher(bus: Any, path: str) -> Any:
    from aperion_event_bus import EventBus

    if path == "python" and _accel.ACCELERATED:
        return lambda *a, **k: EventBus._py_publish_nowait(bus, *a, **k)  # type: ignore[attr-defined]
    return bus.publish_nowait


def test_publish_nowait_is_the_c_method_when_accelerated() -> None:
    from aperion_event_bus import EventBus

    if _accel.ACCELERATED:
        assert type(EventBus.__dict__["publish_nowait"]).__name__ == "method_descriptor"
        assert EventBus._py_publish_nowait.__name__ == "publish_nowait"  # type: ignore[attr-defined]
        import inspect

        params = list(inspect.signature(EventBus.publish_nowait).parameters)
        assert params == ["self", "event", "payload", "source", "correlation_id", "causation_id"]
    else:
        assert inspect_is_function(EventBus.__dict__["publish_nowait"])


def inspect_is_function(obj: Any) -> bool:
    import inspect

    return inspect.isfunction(obj)


@pytest.mark.parametrize("path", _both_paths())
async def test_publish_nowait_envelope_markers_and_counts(path: str) -> None:
    from aperion_event_bus import EventBus, set_correlation_id

    seen: list[Event] = []
    async with EventBus() as bus:
        gate = asyncio_event()

        async def handler(e: Event) -> None:
            if e.payload.get("hold"):
                await gate.wait()
            seen.append(e)

        sub = bus.on("sp.x", handler)
        publish = _publisher(bus, path)
        first = publish("sp.x", {"hold": True})
        await sleep0()
        a = publish("sp.x", {"n": 1})
        b = publish("sp.x", payload={"n": 2}, source="src")
        _tag.set("other")  # the context changed: a marker before the next event
        c = publish(event="sp.x", payload={"n": 3}, correlation_id="corr", causation_id="cause")
        token = set_correlation_id("ambient")
        d = publish("sp.x", {"n": 4})
        from aperion_event_bus.context import _correlation_id

        _correlation_id.reset(token)
        try:  # the first event runs (its marker is taken): the rest waits in the mailbox
            assert _mailbox_shape(bus, sub) == ["Event", "Event", "ctx", "Event", "ctx", "Event"]
            assert sub._lane.markers == 2
            assert bus.get_stats()["events_published"] == 5
            assert bus._dispatcher.pending == 5
        finally:
            gate.set()
        assert await bus.drain(5)
    assert [e.event_id for e in seen] == [
        first.event_id,
        a.event_id,
        b.event_id,
        c.event_id,
        d.event_id,
    ]
    assert a.correlation_id == a.event_id and a.causation_id is None and a.source is None
    assert b.source == "src"
    assert (c.correlation_id, c.causation_id) == ("corr", "cause")
    assert d.correlation_id == "ambient"
    for e in (a, b, c, d):
        assert type(e) is Event and type(e.payload) is FrozenDict
        assert e.traceparent is None and e.tracestate is None
        assert abs(e.timestamp - time.time()) < 60
        assert e.event_id[4:15] == f"{int(e.timestamp * 1000):011x}"


@pytest.mark.parametrize("path", _both_paths())
async def test_publish_nowait_inside_a_handler_makes_a_child(path: str) -> None:
    from aperion_event_bus import EventBus

    children: list[Event] = []
    async with EventBus() as bus:
        publish = _publisher(bus, path)

        async def parent(e: Event) -> None:
            children.append(publish("sp.child", {"k": "v"}))

        bus.on("sp.parent", parent)
        bus.on("sp.child", lambda e: None)
        root = bus.publish_nowait("sp.parent", {}, correlation_id="root-corr")
        assert await bus.drain(5)
    (child,) = children
    assert child.causation_id == root.event_id
    assert child.correlation_id == "root-corr"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        (("a.b", {}, {}), {}),
        (("a.b",), {"event": "a.b"}),
        (("a.b",), {"nope": 1}),
        ((), {"payload": {}}),
        (("a.b", {}), {"payload": {}}),
    ],
)
async def test_publish_nowait_argument_errors_match_twin(args: Any, kwargs: Any) -> None:
    from aperion_event_bus import EventBus

    async with EventBus() as bus:
        with pytest.raises(TypeError) as c_err:
            bus.publish_nowait(*args, **kwargs)
        py = EventBus._py_publish_nowait if _accel.ACCELERATED else EventBus.publish_nowait  # type: ignore[attr-defined]
        with pytest.raises(TypeError) as py_err:
            py(bus, *args, **kwargs)
        assert str(c_err.value) == str(py_err.value)


async def test_publish_nowait_other_cases_take_the_python_path() -> None:
    """Bounded bus, non-dict payload, typed schema, other thread: same results either way."""
    from aperion_event_bus import EventBus

    async with EventBus(max_pending_events=10) as bus:
        got: list[int] = []
        bus.on("sp.b", lambda e: got.append(e.payload["n"]))
        bus.publish_nowait("sp.b", {"n": 1})
        assert await bus.drain(5)
        assert got == [1]
    async with EventBus() as bus:
        got = []
        bus.on("sp.m", lambda e: got.append(e.payload["n"]))
        bus.publish_nowait("sp.m", FrozenDict(n=2))
        bus.publish_nowait("sp.m", {"n": 3, "nested": [1]})
        await asyncio_to_thread(bus.publish_nowait, "sp.m", {"n": 4})
        assert await bus.drain(5)
        assert sorted(got) == [2, 3, 4]


def asyncio_event() -> Any:
    import asyncio

    return asyncio.Event()


async def sleep0() -> None:
    import asyncio

    await asyncio.sleep(0)


async def asyncio_to_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


# ------------------------------------------------------------- quick lane loop
def _quick_paths() -> list[str]:
    return ["c", "python"] if _accel.ACCELERATED else ["python"]


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
        calls = []
        real = dispatch._quick_bare

        def counted(*args: Any) -> Any:
            calls.append(1)
            return real(*args)

        monkeypatch.setattr(dispatch, "_quick_bare", counted)
        request.addfinalizer(lambda: calls or pytest.fail("the C loop was never used"))
    return str(request.param)


async def test_quick_loop_context_order_errors_and_suspensions(
    quick_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bare events keep their order and their publisher's context; a handler that
    raises is reported (with its traceback) and the lane goes on; one that suspends
    is finished before the next event starts."""
    from aperion_event_bus import EventBus, get_correlation_id
    from aperion_event_bus.context import _current_event

    seen: list[tuple[int, str, str | None, bool]] = []
    errors: list[Event] = []
    async with EventBus() as bus:

        async def handler(e: Event) -> None:
            i = e.payload["i"]
            if i % 7 == 3:
                await sleep0()  # suspends: the worker finishes it
            seen.append((i, _tag.get(), get_correlation_id(), _current_event.get() is e))
            if i % 5 == 4:
                raise ValueError(f"bad {i}")

        async def on_error(e: Event) -> None:
            errors.append(e)

        bus.on("q.x", handler)
        bus.on("system.handler_error", on_error)
        published = []
        for i in range(40):
            if i % 10 == 0:
                _tag.set(f"t{i // 10}")  # a context marker before this event
            published.append(bus.publish_nowait("q.x", {"i": i}))
        assert await bus.drain(5)
        _tag.set("-")
    assert [s[0] for s in seen] == list(range(40))
    assert all(tag == f"t{i // 10}" for i, tag, _, _ in seen)
    assert all(corr == published[i].correlation_id for i, _, corr, _ in seen)
    assert all(current for *_, current in seen)
    assert len(errors) == 8
    assert "bad 4" in str(errors[0].payload)
    logged = [r for r in caplog.records if r.exc_info and "bad 4" in str(r.exc_info[1])]
    assert logged, "the handler error was not logged with its exception"
    import traceback

    frames = traceback.extract_tb(logged[0].exc_info[2])  # type: ignore[index]
    assert any(f.name == "handler" for f in frames), frames
    assert bus.get_pending_count() == 0


async def test_quick_loop_failure_is_reported_inside_its_except(quick_path: str) -> None:
    """While a failed quick delivery is reported, ``sys.exc_info()`` holds the
    handler's exception on both loops (hooks such as logging handlers may read it),
    and its traceback reaches the handler's frame."""
    import logging
    import sys
    import traceback

    from aperion_event_bus import EventBus

    seen: list[BaseException | None] = []

    class ExcInfoProbe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(sys.exc_info()[1])

    probe = ExcInfoProbe(logging.ERROR)
    library = logging.getLogger("aperion_event_bus")
    library.addHandler(probe)
    try:
        async with EventBus() as bus:

            async def handler(e: Event) -> None:
                raise ValueError(f"bad {e.payload['i']}")

            bus.on("q.fail", handler)
            for i in range(3):
                bus.publish_nowait("q.fail", {"i": i})
            assert await bus.drain(5)
    finally:
        library.removeHandler(probe)
    assert [str(e) for e in seen] == ["bad 0", "bad 1", "bad 2"]
    assert seen[0] is not None
    assert any(f.name == "handler" for f in traceback.extract_tb(seen[0].__traceback__))


async def test_quick_loop_handler_unsubscribing_itself(quick_path: str) -> None:
    from aperion_event_bus import EventBus

    seen: list[int] = []
    async with EventBus() as bus:

        async def handler(e: Event) -> None:
            seen.append(e.payload["i"])
            if len(seen) == 3:
                bus.off(sub)

        sub = bus.on("q.y", handler)
        for i in range(20):
            bus.publish_nowait("q.y", {"i": i})
        assert await bus.drain(5)
        assert bus.get_pending_count() == 0
    assert seen == [0, 1, 2]


async def test_quick_loop_async_call_returning_a_future_and_base_exceptions(quick_path: str) -> None:
    """An async ``__call__`` object whose call returns another awaitable is awaited;
    a handler raising a BaseException that is not an Exception (here
    CancelledError) is contained and the lane carries on."""
    import asyncio

    from aperion_event_bus import EventBus

    seen: list[int] = []

    class Handler:
        async def __call__(self, e: Event) -> None:  # marks the object as async
            raise AssertionError("replaced below")

    class FutureHandler(Handler):
        def __call__(self, e: Event) -> Any:  # type: ignore[override]
            seen.append(e.payload["i"])
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    async with EventBus() as bus:

        async def cancelled(e: Event) -> None:
            if e.payload["i"] == 1:
                raise asyncio.CancelledError()
            seen.append(100 + e.payload["i"])

        handler = FutureHandler()
        bus.on("q.f", handler)
        bus.on("q.c", cancelled)
        for i in range(3):
            bus.publish_nowait("q.f", {"i": i})
            bus.publish_nowait("q.c", {"i": i})
        assert await bus.drain(5)
        assert bus.get_pending_count() == 0
    assert sorted(seen) == [0, 1, 2, 100, 102]


@pytest.mark.parametrize("bounded", [False, True])
async def test_quick_loop_runs_several_subscriptions_in_priority_order(
    loop_path: str, bounded: bool
) -> None:
    """Fire-and-forget events with three subscriptions go through the quick loop of
    each lane in turn: per event the handlers run in priority order, one after the
    other (also when one suspends or raises), and every handler sees every event."""
    from aperion_event_bus import EventBus

    log: list[tuple[int, str, str]] = []
    errors: list[Event] = []
    kwargs: dict[str, Any] = {"max_pending_events": 1000} if bounded else {}
    async with EventBus(**kwargs) as bus:

        def make(name: str) -> Any:
            async def handler(e: Event) -> None:
                i = e.payload["i"]
                log.append((i, name, "start"))
                if name == "mid" and i % 4 == 1:
                    await sleep0()
                log.append((i, name, "end"))
                if name == "high" and i % 5 == 2:
                    raise ValueError("high failed")

            return handler

        bus.on("q.m", make("low"), priority=1)
        bus.on("q.m", make("high"), priority=10)
        bus.on("q.m", make("mid"), priority=5)
        bus.on("system.handler_error", errors.append)
        for i in range(30):
            bus.publish_nowait("q.m", {"i": i})
        assert await bus.drain(5)
        assert bus.get_pending_count() == 0
    for i in range(30):
        mine = [(name, step) for j, name, step in log if j == i]
        assert mine == [
            ("high", "start"),
            ("high", "end"),
            ("mid", "start"),
            ("mid", "end"),
            ("low", "start"),
            ("low", "end"),
        ], (i, mine)
    for name in ("high", "mid", "low"):
        assert [j for j, n, step in log if n == name and step == "end"] == list(range(30))
    assert len(errors) == 6


@needs_c
def test_hot_attributes_take_the_fast_lookup() -> None:
    """Every attribute the C hot path reads is a plain slot or instance attribute
    (a property there would be bypassed, so registration leaves it out: this test
    then fails and says which)."""
    from aperion_event_bus import bus, dispatch, subscriptions

    sp = _accel.speedups
    assert sp is not None
    for cls, names in bus._FAST_ATTRIBUTES.items():
        assert sp.fast_attributes(cls, names) == list(names), cls
    lane_names = ("closing", "dead", "mailbox", "tail_ctx", "markers", "waiter", "head_ctx", "running")
    assert sp.fast_attributes(dispatch._Lane, lane_names) == list(lane_names)
    assert sp.fast_attributes(subscriptions.Subscription, ("_lane", "_active", "concurrency", "active")) == [
        "_lane",
        "_active",
        "concurrency",
    ]  # `active` is a property: left to the generic lookup


@needs_c
async def test_fast_attribute_writes_are_seen_by_python() -> None:
    """The published count and the lane bookkeeping written by C are the values
    Python reads (same slot, same instance dict)."""
    from aperion_event_bus import EventBus

    async with EventBus() as bus:
        seen: list[int] = []

        async def handler(e: Event) -> None:
            seen.append(e.payload["i"])

        sub = bus.on("fa.x", handler)
        for i in range(5):
            bus.publish_nowait("fa.x", {"i": i})
        assert bus._published == 5 and bus.get_stats()["events_published"] == 5
        from contextvars import Context

        lane = sub._lane
        assert lane.markers == sum(1 for x in lane.mailbox if type(x) is Context)
        assert len(lane.mailbox) - lane.markers == 5
        assert await bus.drain(5)
        assert sub._lane.running == 0 and sub._lane.markers == 0
    assert seen == list(range(5))
