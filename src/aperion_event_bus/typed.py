"""Typed events: classes that name their event type and validate their payload.

Any pydantic model or dataclass becomes a typed event by naming its type, either
with a class attribute ``event_type: ClassVar[str] = "user.created"`` or with the
``@event_type("user.created")`` decorator. Publish an instance, subscribe with the
class, and handlers receive a validated instance built from the event payload.
``TypedEvent`` (``from aperion_event_bus.typed import TypedEvent``) is a ready
frozen pydantic base class; importing it needs the ``pydantic`` extra.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._frozen import thaw
from .errors import MissingExtraError, ValidationError

if TYPE_CHECKING:
    from .events import Event

__all__ = ["EventSchema", "TypedEvent", "event_type", "event_type_of", "schema_for"]

T = TypeVar("T")


def event_type(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator that names the event type of a pydantic model or dataclass."""

    def mark(cls: type[T]) -> type[T]:
        cls.__event_type__ = name  # type: ignore[attr-defined]
        return cls

    return mark


def event_type_of(cls: object) -> str | None:
    """The event type a typed-event class declares, or None for other objects."""
    if not isinstance(cls, type):
        return None
    name = cls.__dict__.get("__event_type__") or getattr(cls, "__event_type__", None)
    if name is None:
        name = getattr(cls, "event_type", None)
    return name if isinstance(name, str) and name else None


def _is_pydantic(cls: type) -> bool:
    return callable(getattr(cls, "model_validate", None)) and callable(
        getattr(cls, "model_dump", None)
    )


class EventSchema:
    """Converts between a typed-event class and event payloads."""

    __slots__ = ("_checks", "_pydantic", "_required", "cls", "event_type")

    def __init__(self, cls: type) -> None:
        name = event_type_of(cls)
        if name is None:
            raise ValidationError(
                f"{cls.__qualname__} does not name an event type: add "
                "`event_type: ClassVar[str] = 'domain.action'` or decorate it with "
                "@event_type('domain.action')"
            )
        if not (_is_pydantic(cls) or dataclasses.is_dataclass(cls)):
            raise ValidationError(
                f"{cls.__qualname__} must be a pydantic model or a dataclass to be a typed event"
            )
        self.cls = cls
        self.event_type = name
        self._pydantic = _is_pydantic(cls)
        self._required: tuple[str, ...] = ()
        self._checks: tuple[tuple[str, tuple[type, ...], str], ...] = ()
        if not self._pydantic:
            self._required = tuple(
                f.name
                for f in dataclasses.fields(cls)
                if f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            )
            self._checks = _dataclass_checks(cls)

    def to_payload(self, instance: Any) -> dict[str, Any]:
        """The payload for a typed-event instance (its fields, as Python values)."""
        if self._pydantic:
            data: dict[str, Any] = instance.model_dump(mode="python")
            return data
        return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}

    def from_payload(self, payload: Mapping[str, Any]) -> Any:
        """Build a validated instance; ValidationError names the failing field."""
        data = thaw(payload)
        if self._pydantic:
            try:
                return self.cls.model_validate(data)  # type: ignore[attr-defined]
            except Exception as exc:
                raise _pydantic_error(self, exc) from exc
        names = {f.name for f in dataclasses.fields(self.cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValidationError(
                f"{self.event_type}: unknown field {unknown[0]!r} for {self.cls.__qualname__}",
                self.event_type,
                field=unknown[0],
            )
        for name in self._required:
            if name not in data:
                raise ValidationError(
                    f"{self.event_type}: missing field {name!r} for {self.cls.__qualname__}",
                    self.event_type,
                    field=name,
                )
        for name, accepted, expected in self._checks:
            if name in data and not _fits(data[name], accepted):
                raise ValidationError(
                    f"{self.event_type}: field {name!r} must be {expected}, not "
                    f"{type(data[name]).__name__} ({data[name]!r:.60})",
                    self.event_type,
                    field=name,
                )
        try:
            return self.cls(**data)
        except TypeError as exc:
            raise ValidationError(
                f"{self.event_type}: payload does not fit {self.cls.__qualname__}: {exc}",
                self.event_type,
            ) from exc

    def validate(self, payload: Mapping[str, Any]) -> None:
        """Raise ValidationError when ``payload`` does not fit the class."""
        self.from_payload(payload)

    def adapt(self, event: Event) -> Any:
        """Handler argument for a subscription made with this class."""
        return self.from_payload(event.payload)


_SIMPLE: dict[Any, tuple[type, ...]] = {
    int: (int,),
    float: (float, int),  # an int is a fine float, as in JSON
    str: (str,),
    bool: (bool,),
    type(None): (type(None),),
    list: (list,),
    dict: (dict,),
}


def _accepted(annotation: Any) -> tuple[type, ...] | None:
    """The runtime types a payload value may have for ``annotation``; None when the
    annotation is not one this check understands (then the value is not checked)."""
    simple = _SIMPLE.get(annotation)
    if simple is not None:
        return simple
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return (origin,)
    if origin is typing.Union or origin is types.UnionType:
        accepted: list[type] = []
        for arg in typing.get_args(annotation):
            part = _accepted(arg)
            if part is None:
                return None
            accepted.extend(part)
        return tuple(accepted)
    return None


def _dataclass_checks(cls: type) -> tuple[tuple[str, tuple[type, ...], str], ...]:
    """(field, accepted runtime types, description) for the fields of a dataclass
    whose annotations are simple: int, float, str, bool, None, list, dict (and their
    parametrised forms, checked as the container only), and unions of those."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: nothing is checked
        return ()
    checks = []
    for f in dataclasses.fields(cls):
        annotation = hints.get(f.name)
        accepted = _accepted(annotation) if f.init and annotation is not None else None
        if accepted is not None:
            checks.append((f.name, accepted, " or ".join(t.__name__ for t in accepted)))
    return tuple(checks)


def _fits(value: Any, accepted: tuple[type, ...]) -> bool:
    if type(value) is bool:  # a bool is an int to isinstance, not to a payload schema
        return bool in accepted
    return isinstance(value, accepted)


def _pydantic_error(schema: EventSchema, exc: Exception) -> ValidationError:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        details = errors()
        if details:
            first = details[0]
            loc = ".".join(str(p) for p in first.get("loc", ())) or "<payload>"
            return ValidationError(
                f"{schema.event_type}: field {loc!r}: {first.get('msg', 'invalid value')} "
                f"({len(details)} error(s) validating {schema.cls.__qualname__})",
                schema.event_type,
                field=loc,
            )
    return ValidationError(f"{schema.event_type}: {exc}", schema.event_type)


def schema_for(cls: type) -> EventSchema:
    """Return the EventSchema of a typed-event class (raises ValidationError if not one)."""
    return EventSchema(cls)


def __getattr__(name: str) -> Any:
    if name == "TypedEvent":
        return _typed_event_base()
    raise AttributeError(name)


@functools.cache
def _typed_event_base() -> type:
    try:
        from pydantic import BaseModel, ConfigDict
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError("TypedEvent", "pydantic") from exc

    class TypedEvent(BaseModel):
        """Frozen pydantic base for typed events; set ``event_type: ClassVar[str]``."""

        model_config = ConfigDict(frozen=True)

    return TypedEvent


if TYPE_CHECKING:
    from pydantic import BaseModel as TypedEvent
