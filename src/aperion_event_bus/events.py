"""The Event envelope: an immutable record of something that happened.

An event carries its type (``{domain}.{action}``), a read-only payload, the time it
was created, a unique time-ordered id, and the context that ties it to other
events: correlation id, causation id (the parent event) and W3C trace context.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from ._accel import speedups
from ._frozen import FrozenDict, freeze, freeze_payload
from ._ids import new_event_id
from ._json import dumps, loads
from .errors import MissingFieldError, SerializationError, ValidationError

__all__ = ["ENVELOPE_FIELDS", "Event"]

ENVELOPE_FIELDS = (
    "event_type",
    "payload",
    "timestamp",
    "event_id",
    "source",
    "correlation_id",
    "causation_id",
    "traceparent",
    "tracestate",
)
_REQUIRED = ("event_type", "payload", "timestamp", "event_id")
_OPTIONAL = ENVELOPE_FIELDS[4:]


class _EventSlots:
    """Storage layout shared by Event and its private fast-construction twin."""

    __slots__ = ENVELOPE_FIELDS

    event_type: str
    payload: FrozenDict
    timestamp: float
    event_id: str
    source: str | None
    correlation_id: str | None
    causation_id: str | None
    traceparent: str | None
    tracestate: str | None


@dataclasses.dataclass(frozen=True, init=False, repr=False, eq=False)
class _DataclassFields:
    """Event's fields as ``dataclasses`` describes them (1.x Event was a frozen
    dataclass): ``fields``, ``replace`` and ``asdict`` work on Event through them."""

    event_type: str
    payload: Mapping[str, Any]
    timestamp: float | None = None
    event_id: str | None = None
    source: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = dataclasses.field(default=None, kw_only=True)
    traceparent: str | None = dataclasses.field(default=None, kw_only=True)
    tracestate: str | None = dataclasses.field(default=None, kw_only=True)


class Event(_EventSlots):
    """Immutable event envelope.

    ``Event(event_type, payload, timestamp=<now>, event_id=<evt_...>, source=None,
    correlation_id=None, *, causation_id=None, traceparent=None, tracestate=None)``.
    The payload is deep-copied into read-only containers; assigning an attribute
    raises ``AttributeError``. ``timestamp`` is Unix time in seconds (float).
    """

    __slots__ = ()
    # dataclasses.fields/replace/asdict/astuple see Event as the frozen dataclass it
    # was in 1.x; replace() builds a new Event (payload frozen again)
    __dataclass_fields__ = _DataclassFields.__dataclass_fields__
    __dataclass_params__ = _DataclassFields.__dataclass_params__  # type: ignore[attr-defined]
    __match_args__ = ENVELOPE_FIELDS[:6]

    def __init__(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        timestamp: float | None = None,
        event_id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
        *,
        causation_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        if not isinstance(event_type, str) or not event_type or event_type.isspace():
            raise ValidationError("event_type must be a non-empty string", event_type)
        if not isinstance(payload, Mapping):
            raise ValidationError("payload must be a dict", event_type)
        stamp = time.time() if timestamp is None else float(timestamp)
        if not math.isfinite(stamp):
            raise ValidationError(
                f"timestamp must be a finite number of seconds since the epoch, not {timestamp!r}",
                event_type,
            )
        put = object.__setattr__
        put(self, "event_type", event_type)
        put(self, "payload", freeze_payload(payload))
        put(self, "timestamp", stamp)
        put(self, "event_id", new_event_id() if event_id is None else event_id)
        put(self, "source", source)
        put(self, "correlation_id", correlation_id)
        put(self, "causation_id", causation_id)
        put(self, "traceparent", traceparent)
        put(self, "tracestate", tracestate)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(
            f"Event is immutable; use event.replace({name}=...) to make a changed copy"
        )

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Event is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in ENVELOPE_FIELDS)

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return (
            f"Event(event_type={self.event_type!r}, event_id={self.event_id!r}, "
            f"correlation_id={self.correlation_id!r}, causation_id={self.causation_id!r}, "
            f"source={self.source!r}, payload={dict(self.payload)!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_from_fields, tuple(getattr(self, f) for f in ENVELOPE_FIELDS))

    def __copy__(self) -> Event:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Event:
        return self

    @property
    def domain(self) -> str:
        """The part of the event type before the first dot."""
        return self.event_type.partition(".")[0]

    @property
    def action(self) -> str | None:
        """The part of the event type after the first dot (None without a dot)."""
        _head, dot, tail = self.event_type.partition(".")
        return tail if dot else None

    def replace(self, **changes: Any) -> Event:
        """Return a copy with some envelope fields changed (``payload`` is frozen again)."""
        unknown = set(changes) - set(ENVELOPE_FIELDS)
        if unknown:
            raise TypeError(f"unknown Event field(s): {', '.join(sorted(unknown))}")
        fields = {f: changes.get(f, getattr(self, f)) for f in ENVELOPE_FIELDS}
        return Event(**fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every envelope field (payload as an ordinary mutable dict copy)."""
        from ._frozen import thaw

        data = {f: getattr(self, f) for f in ENVELOPE_FIELDS}
        data["payload"] = thaw(self.payload)
        return data

    def to_jsonl(self) -> str:
        """One compact JSON line: the 1.x keys first, then the newer envelope fields.

        Non-JSON payload values use the documented forms of ``aperion_event_bus._json``.
        """
        return dumps(self._json_fields())

    def _json_fields(self) -> dict[str, Any]:
        """What ``to_jsonl`` encodes (payload not copied); the store encodes a whole
        run of these in one ``dumps`` call."""
        return {  # ENVELOPE_FIELDS order, spelled out: it runs for every stored event
            "event_type": self.event_type,
            "payload": self.payload,
            "timestamp": self.timestamp,
            "event_id": self.event_id,
            "source": self.source,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Rebuild an event from ``to_dict()``/parsed JSON; the 1.x four keys are required
        (a missing one raises ``MissingFieldError``: a ValidationError and, as in 1.x,
        a KeyError)."""
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise MissingFieldError(
                f"event record is missing required field(s) {', '.join(missing)}; "
                f"expected at least {', '.join(_REQUIRED)}",
                data.get("event_type"),
                field=missing[0],
            )
        payload = data["payload"]
        if not isinstance(payload, Mapping):
            raise ValidationError("payload must be a dict", data.get("event_type"))
        optional = {k: data.get(k) for k in _OPTIONAL}
        try:
            return cls(data["event_type"], payload, data["timestamp"], data["event_id"], **optional)
        except SerializationError:
            # NaN/Infinity in a line written before publish refused them (1.x wrote
            # them): read it as written; anything else unserialisable is raised again
            frozen = freeze(payload, "payload", False)
        event = cls(data["event_type"], {}, data["timestamp"], data["event_id"], **optional)
        object.__setattr__(event, "payload", frozen)
        return event

    @classmethod
    def from_jsonl(cls, line: str | bytes) -> Event:
        """Parse one line written by ``to_jsonl`` (the first four keys are required)."""
        data = loads(line.strip())
        if not isinstance(data, dict):
            raise ValidationError("an event JSON line must hold a JSON object")
        return cls.from_dict(data)


def _from_fields(*values: Any) -> Event:
    return _make_event(*values)


class _FastEvent(_EventSlots):
    """Same layout as Event, ordinary attribute assignment: built, then re-classed."""

    __slots__ = ()

    def __init__(
        self,
        event_type: str,
        payload: FrozenDict,
        timestamp: float,
        event_id: str,
        source: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        self.event_type = event_type
        self.payload = payload
        self.timestamp = timestamp
        self.event_id = event_id
        self.source = source
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.__class__ = Event  # type: ignore[assignment]


if TYPE_CHECKING:

    def _make_event(
        event_type: str,
        payload: FrozenDict,
        timestamp: float,
        event_id: str,
        source: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Event:
        """Internal constructor for already-validated, already-frozen fields (hot path)."""

elif speedups is None:
    _make_event = _FastEvent  # no wrapper call on the hot path: it returns an Event
else:  # the C twin fills the same slots (keyword calls go to _FastEvent)
    speedups.set_event(Event, _EventSlots, _FastEvent)
    _make_event = speedups.make_event
