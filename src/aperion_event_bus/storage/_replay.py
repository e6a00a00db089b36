"""Reading events back: replay pages with filters, and pending deliveries.

A page is fetched with ONE statement that returns the whole page as one JSON text
(``group_concat`` of the stored bodies) and decoded in one call (``decode_page``);
reading row by row would cost a GIL hand-off per row (see ``_writer``). Pages are keyed by
``seq`` (publish order), so paging never skips or repeats an event.

Type patterns follow ``aperion_event_bus.patterns``: SQLite narrows the rows with
``GLOB`` (a superset), the exact pattern rule is applied in Python.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from .._accel import speedups
from .._frozen import FrozenDict, FrozenList
from .._json import loads
from ..events import Event, _make_event
from ..patterns import compile_pattern, validate_pattern

__all__ = ["EventQuery", "decode_event", "decode_events", "decode_page", "pending_page"]

# SQLite may read a JSON number back in the last bit differently on some builds;
# SQL filters on time use this margin and the exact bound is re-checked in Python.
_TS_MARGIN = 1e-6


def _freeze_json(value: Any) -> Any:
    """Read-only copy of parsed JSON (dicts, lists, scalars only): what ``freeze`` makes
    of a payload, without its per-key type checks and error paths (replay hot path)."""
    kind = type(value)
    if kind is dict:
        for item in value.values():
            if type(item) is dict or type(item) is list:
                return FrozenDict({k: _freeze_json(v) for k, v in value.items()})
        return FrozenDict(value)
    if kind is list:
        return FrozenList([_freeze_json(v) for v in value])
    return value


def decode_event(data: dict[str, Any]) -> Event:
    """Build an Event from a stored envelope (trusted: written by the store)."""
    return decode_events([data])[0]


def decode_events(envelopes: list[dict[str, Any]]) -> list[Event]:
    """``decode_event`` for a page of envelopes, in one loop (the replay hot path:
    a flat payload is copied into a FrozenDict without a ``_freeze_json`` call)."""
    make = _make_event
    frozen = FrozenDict
    freeze = _freeze_json
    events: list[Event] = []
    append = events.append
    for data in envelopes:
        payload = data["payload"]
        if type(payload) is dict:
            for item in payload.values():
                if type(item) is dict or type(item) is list:
                    payload = freeze(payload)
                    break
            else:
                payload = frozen(payload)
        else:
            payload = freeze(payload)
        get = data.get
        stamp = data["timestamp"]
        append(
            make(
                data["event_type"],
                payload,
                stamp if type(stamp) is float else float(stamp),
                data["event_id"],
                get("source"),
                get("correlation_id"),
                get("causation_id"),
                get("traceparent"),
                get("tracestate"),
            )
        )
    return events


def _py_decode_page(text: str) -> list[Event]:
    """The Events of a replay page: ``text`` is the stored bodies joined by commas
    (``group_concat(body, ',')``), in the order SQLite returned them."""
    return decode_events(loads(f"[{text}]"))


if speedups is not None:
    speedups.set_decode(FrozenList, _py_decode_page)
# The C twin parses the bodies straight into Events (no envelope dicts, payload
# containers frozen as they are read, value events untracked by the GC) and hands
# any page it does not handle itself to the Python one, which stays the reference.
decode_page = _py_decode_page if speedups is None else speedups.decode_page


def _glob_literal(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


class EventQuery:
    """Replay filters compiled to SQL (+ a Python check for patterns and exact times)."""

    def __init__(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Sequence[str] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        if isinstance(types, str):
            types = [types]
        self.since = since
        self.until = until
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("timestamp >= ?")
            params.append(since - _TS_MARGIN)
        if until is not None:
            clauses.append("timestamp <= ?")
            params.append(until + _TS_MARGIN)
        if correlation_id is not None:
            clauses.append("correlation_id = ?")
            params.append(correlation_id)
        self._matchers: list[Callable[[str], bool]] | None = None
        self.empty = False
        if types is not None:
            patterns = [validate_pattern(t) for t in types]
            if not patterns:
                self.empty = True
            elif "*" not in patterns:
                exact = [p for p in patterns if "*" not in p]
                wild = [p for p in patterns if "*" in p]
                ors = []
                if exact:
                    ors.append(f"event_type IN ({', '.join('?' * len(exact))})")
                    params.extend(exact)
                for p in wild:
                    ors.append("event_type GLOB ?")
                    params.append("*".join(_glob_literal(s) for s in p.split("*")))
                clauses.append("(" + " OR ".join(ors) + ")")
                if wild:
                    self._matchers = [compile_pattern(p) for p in patterns]
        self._where = "".join(f" AND {c}" for c in clauses)
        self._params = tuple(params)

    def bounds(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """``(after, last)``: the seq range to scan, using the timestamp index."""
        after = 0
        if self.since is not None:
            row = conn.execute(
                "SELECT MIN(seq) FROM events WHERE timestamp >= ?", (self.since - _TS_MARGIN,)
            ).fetchone()
            after = (row[0] or 1 << 62) - 1
        if self.until is not None:
            row = conn.execute(
                "SELECT MAX(seq) FROM events WHERE timestamp <= ?", (self.until + _TS_MARGIN,)
            ).fetchone()
            last = row[0] or 0
        else:
            last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        return after, last

    def page(
        self, conn: sqlite3.Connection, after: int, last: int, limit: int
    ) -> tuple[list[Event], int | None]:
        """Events with ``after < seq <= last`` (up to ``limit`` scanned) and the last seq seen."""
        # The bodies and their seqs in two lists from one pass over the rows (so in
        # the same order): no [seq, body] wrapper per row to parse and allocate.
        text, seqs = conn.execute(
            "SELECT group_concat(body, ','), group_concat(seq, ',') FROM "
            f"(SELECT seq, body FROM events WHERE seq > ? AND seq <= ?{self._where} "
            "ORDER BY seq LIMIT ?)",
            (after, last, *self._params, limit),
        ).fetchone()
        if text is None:
            return [], None
        events, (order,) = _decode_rows(text, seqs)
        if self._matchers is not None or self.since is not None or self.until is not None:
            events = [e for e in events if self._accepts(e)]
        return events, order[-1]

    def _accepts(self, event: Event) -> bool:
        if self.since is not None and event.timestamp < self.since:
            return False
        if self.until is not None and event.timestamp > self.until:
            return False
        matchers = self._matchers
        return matchers is None or any(m(event.event_type) for m in matchers)


def pending_page(
    conn: sqlite3.Connection, name: str, after: int, limit: int
) -> tuple[list[tuple[Event, int]], int | None]:
    """Pending deliveries for ``name`` with ``seq > after`` in publish order: (event, attempts)."""
    text, seqs, attempts = conn.execute(
        "SELECT group_concat(body, ','), group_concat(seq, ','), group_concat(attempts, ',') "
        "FROM (SELECT d.seq AS seq, d.attempts AS attempts, e.body AS body "
        "FROM deliveries AS d JOIN events AS e ON e.seq = d.seq "
        "WHERE d.name = ? AND d.seq > ? ORDER BY d.seq LIMIT ?)",
        (name, after, limit),
    ).fetchone()
    if text is None:
        return [], None
    events, (order, counts) = _decode_rows(text, seqs, attempts)
    return list(zip(events, counts, strict=True)), order[-1]


def _decode_rows(text: str, *columns: str) -> tuple[list[Event], list[list[int]]]:
    """The Events of a page's bodies and its integer columns (``group_concat`` lists
    of the same pass over the rows, the first one the seqs), in seq order.

    group_concat keeps the subquery's order in practice; the rows are sorted by
    seq if a build ever does not."""
    events = decode_page(text)
    values = [list(map(int, column.split(","))) for column in columns]
    if any(len(column) != len(events) for column in values):
        raise ValueError("replay page: bodies and columns do not pair up")
    order = values[0]
    if order != sorted(order):
        by_seq = sorted(range(len(order)), key=order.__getitem__)
        events = [events[i] for i in by_seq]
        values = [[column[i] for i in by_seq] for column in values]
    return events, values
