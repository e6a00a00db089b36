"""Subscription registry: ordering, weak references, async detection, match cache."""

from __future__ import annotations

import functools
import gc

from aperion_event_bus import EventBus, Subscription
from aperion_event_bus.subscriptions import SubscriptionRegistry, is_async_callable


def test_priority_order_is_stable_and_highest_first() -> None:
    bus = EventBus()
    ids = [
        bus.subscribe(lambda e: None, "a.b", priority=p) for p in (10, 100, 50, 100, 10)
    ]
    order = [s.subscription_id for s in bus.subscriptions]
    assert order == [ids[1], ids[3], ids[2], ids[0], ids[4]]
    assert all(i.startswith("sub_") for i in ids)
    copy = bus.get_subscriptions()
    copy.clear()
    assert len(bus.get_subscriptions()) == 5
    assert bus.unsubscribe(ids[0]) and not bus.unsubscribe(ids[0])
    bus.shutdown(1)


def test_subscription_1x_constructor_and_matches() -> None:
    sub = Subscription(lambda e: None, {"user.*", "order.created"})
    assert sub.matches("user.deleted") and sub.matches("order.created")
    assert not sub.matches("order.deleted")
    sub.active = False
    assert not sub.matches("user.deleted")
    assert sub.priority == 100 and sub.metadata == {}


def test_async_detection() -> None:
    async def coro_fn(e: object) -> None: ...

    class AsyncCallable:
        async def __call__(self, e: object) -> None: ...

    class SyncCallable:
        def __call__(self, e: object) -> None: ...

    assert is_async_callable(coro_fn)
    assert is_async_callable(functools.partial(coro_fn))
    assert is_async_callable(AsyncCallable())
    assert not is_async_callable(SyncCallable())
    assert not is_async_callable(lambda e: None)


def test_bound_methods_are_weak_and_cleaned_up() -> None:
    bus = EventBus()

    class Listener:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def handle(self, event: object) -> None:
            self.seen.append("x")

    listener = Listener()
    bus.subscribe(listener.handle, "a.b")
    bus.emit("a.b", {}, wait_for_handlers=True)
    assert listener.seen == ["x"]
    del listener
    gc.collect()
    assert bus.get_subscriptions() == []
    bus.emit("a.b", {}, wait_for_handlers=True)  # no crash, nothing to call

    strong = Listener()
    bus.on("a.b", strong.handle, weak=False)
    ref = strong.handle
    del strong
    gc.collect()
    assert len(bus.get_subscriptions()) == 1
    bus.emit("a.b", {}, wait_for_handlers=True)
    assert ref.__self__.seen == ["x"]

    captured: list[int] = []
    bus.on("c.d", lambda e: captured.append(1))  # lambdas stay alive
    gc.collect()
    bus.emit("c.d", {}, wait_for_handlers=True)
    assert captured == [1]
    bus.shutdown(1)


def test_match_cache_is_invalidated() -> None:
    reg = SubscriptionRegistry()
    a = Subscription(lambda e: None, "user.*")
    reg.add(a)
    assert reg.match("user.created") == (a,)
    b = Subscription(lambda e: None, "*.created", priority=200)
    reg.add(b)
    assert reg.match("user.created") == (b, a)
    reg.remove(a.subscription_id)
    assert reg.match("user.created") == (b,)
    assert reg.match("nothing.here") == ()


def test_non_matching_subscriptions_do_not_cost_dispatch() -> None:
    reg = SubscriptionRegistry()
    target = Subscription(lambda e: None, "hot.path")
    reg.add(target)
    calls = 0

    class CountingSub(Subscription):
        __slots__ = ()

        def matches(self, event_type: str) -> bool:
            nonlocal calls
            calls += 1
            return super().matches(event_type)

    for i in range(1000):
        reg.add(CountingSub(lambda e: None, f"other{i}.thing"))
    reg.match("hot.path")
    first = calls
    for _ in range(1000):
        reg.match("hot.path")
    assert calls == first  # cached: no pattern evaluated again
