"""The writer's memory of recent seqs (``_ops.RecentSeqs``), which lets an ack delete
its delivery by seq: a seq it returns is always the event's committed seq, the most
recent appends are always found, and its size stays bounded in small generations
(a large dict growing with the GIL held stalled the event loop)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from aperion_event_bus.storage import _ops
from aperion_event_bus.storage._ops import RecentSeqs


@dataclass
class _Appended:
    event_id: str


# one step: (how many new events, what happens to the transaction)
_steps = st.lists(
    st.tuples(st.integers(1, 12), st.sampled_from(["commit", "rollback", "forget"])),
    max_size=60,
)


@given(_steps)
def test_a_remembered_seq_is_the_committed_one_and_recent_ones_are_found(
    steps: list[tuple[int, str]],
) -> None:
    seqs = RecentSeqs(generation_size=8, generations=3)
    committed: dict[str, int] = {}  # the reference: what SQLite holds
    since_forget: list[str] = []  # committed ids remembered, oldest first
    rolled_back: set[str] = set()
    next_seq = next_id = 1
    for count, outcome in steps:
        events = [_Appended(f"e{next_id + i}") for i in range(count)]
        next_id += count
        if outcome == "forget":
            seqs.forget()
        else:
            seqs.stage(events, next_seq)
        if outcome == "rollback":
            seqs.rollback()
            rolled_back.update(e.event_id for e in events)
            continue  # SQLite hands the same seqs out again
        seqs.commit()
        for offset, e in enumerate(events):
            committed[e.event_id] = next_seq + offset
        next_seq += count
        if outcome == "forget":
            since_forget = []
        else:
            since_forget.extend(e.event_id for e in events)
    for event_id in committed.keys() | rolled_back:
        got = seqs.get(event_id)
        assert got is None or got == committed.get(event_id), event_id
    # everything of the last generation_size * (generations - 1) appends is found
    for event_id in since_forget[-8 * 2 :]:
        assert seqs.get(event_id) == committed[event_id]
    assert len(seqs.generations) <= 3
    assert seqs.generations[0] is seqs.newest


def test_memory_stays_bounded_in_small_generations() -> None:
    seqs = RecentSeqs()
    batch = 500
    for first in range(1, 300_000, batch):
        seqs.stage([_Appended(f"e{first + i}") for i in range(batch)], first)
        seqs.commit()
    sizes = [len(generation) for generation in seqs.generations]
    assert len(sizes) == _ops.SEQ_GENERATIONS
    assert max(sizes) < _ops.SEQ_GENERATION + batch  # no generation grows large
    newest = 300_000 - 1
    assert seqs.get(f"e{newest}") == newest
    assert seqs.get(f"e{newest - (_ops.SEQ_GENERATIONS - 1) * _ops.SEQ_GENERATION}") is not None
    assert seqs.get("e1") is None  # long forgotten: acked through the index
