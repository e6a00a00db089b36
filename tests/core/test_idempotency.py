"""``idempotency.LRUSeen``, the default memory of ``idempotent`` handlers: it always
holds the ``maxsize`` most recently used ids (an exact LRU is the reference), never
claims an id it was not given, stays bounded, and never rebuilds one large table
(an ``OrderedDict`` of 100,000 ids blocked the event loop for up to ~15 ms)."""

from __future__ import annotations

from collections import OrderedDict
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aperion_event_bus import idempotency
from aperion_event_bus.idempotency import LRUSeen


def _holds(seen: LRUSeen, event_id: str) -> bool:
    """Membership without counting as use (``in`` refreshes the id)."""
    return event_id in seen._young or any(event_id in g for g in seen._old)


_ops = st.lists(st.tuples(st.sampled_from(["add", "in"]), st.integers(0, 40)), max_size=300)


@given(st.integers(1, 12), _ops)
def test_the_maxsize_most_recently_used_ids_are_always_held(
    maxsize: int, ops: list[tuple[str, int]]
) -> None:
    with mock.patch.object(idempotency, "_GENERATION", 4):
        seen = LRUSeen(maxsize)
    reference: OrderedDict[str, None] = OrderedDict()  # an exact LRU of maxsize ids
    added: set[str] = set()

    def use(event_id: str) -> None:
        reference[event_id] = None
        reference.move_to_end(event_id)
        while len(reference) > maxsize:
            reference.popitem(last=False)

    for op, n in ops:
        event_id = f"e{n}"
        if op == "add":
            seen.add(event_id)
            added.add(event_id)
            use(event_id)
        else:
            found = event_id in seen
            assert found == _holds(seen, event_id)
            assert found or event_id not in reference
            assert not found or event_id in added
            if found:  # a hit counts as use, also of an id held beyond the maxsize newest
                use(event_id)
        for kept in reference:
            assert _holds(seen, kept), kept
        held = seen._young.union(*seen._old)
        assert held <= added
        assert len(seen) == len(held) == len(seen._young) + sum(map(len, seen._old))
        assert len(seen) <= maxsize + 2 * min(maxsize, 4)


def test_stays_bounded_in_small_generations() -> None:
    seen = LRUSeen(maxsize=50_000)
    for i in range(200_000):
        seen.add(f"e{i}")
    assert 50_000 <= len(seen) <= 50_000 + 2 * idempotency._GENERATION
    assert max(len(g) for g in [seen._young, *seen._old]) <= idempotency._GENERATION
    assert all(_holds(seen, f"e{i}") for i in range(150_000, 200_000))
    assert not _holds(seen, "e0")


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        LRUSeen(0)


def test_hits_alone_do_not_pile_up_generations() -> None:
    seen = LRUSeen(maxsize=20_000)
    ids = [f"e{i}" for i in range(20_000)]
    for event_id in ids:
        seen.add(event_id)
    for _ in range(30):  # duplicates only: every hit moves an id to the newest
        for event_id in ids[5:]:
            assert event_id in seen
    assert not [g for g in seen._old if not g]  # no emptied generation is kept
    assert len(seen._old) <= 20_000 // idempotency._GENERATION + 2
