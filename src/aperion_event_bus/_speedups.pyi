"""Type stub of the optional C accelerator (see _speedups.c and _accel.py)."""

from collections.abc import Iterator, Mapping
from typing import Any

from ._frozen import FrozenDict
from .events import Event

id_counter: Iterator[int]

def seed_ids(start: int, node: str) -> None: ...
def event_id_at(now: float, /) -> str: ...
def new_event_id() -> str: ...
def new_id(prefix: str, /) -> str: ...
def set_frozen(frozen_dict: type[FrozenDict], fallback: Any) -> None: ...
def freeze_payload(payload: Mapping[str, Any], /) -> FrozenDict: ...
def set_event(event: type[Event], layout: type, fallback: Any) -> None: ...
def make_event(
    event_type: str,
    payload: FrozenDict,
    timestamp: float,
    event_id: str,
    source: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> Event: ...
def build_event(
    event_type: str,
    payload: Mapping[str, Any],
    source: str | None,
    correlation_id: str | None,
    causation_id: str | None,
    /,
) -> Event: ...
