"""Type stub of the optional C accelerator (see _speedups.c and _accel.py)."""

from collections.abc import Iterator, Mapping, Sequence
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
def set_bus(
    event_bus: type, py_publish_nowait: Any, get_running_loop: Any, current_event: Any, correlation_id: Any
) -> Any: ...
def set_dispatch(
    current_event: Any, correlation_id: Any, await_any: Any, perf_counter: Any, lane: type, subscription: type
) -> None: ...
def quick_bare(
    lane: Any, sub: Any, handler: Any, fin: Iterator[int], budget: int, /
) -> tuple[int, tuple[Any, ...] | None]: ...
def encode_envelopes(events: Sequence[Event], encoder: Any, escape: Any, /) -> str: ...
