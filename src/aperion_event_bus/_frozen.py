"""Read-only payload containers: handlers cannot change what others see.

``FrozenDict`` and ``FrozenList`` subclass ``dict``/``list`` so ``isinstance``
checks and JSON encoders keep working, but every mutating method raises
``TypeError``. ``freeze`` copies a payload into these containers once, at publish,
and checks that every value can be serialised (see ``_json``): a value JSON cannot
carry (NaN, infinity, an opaque object, an Enum whose value is one of those, a key
JSON cannot name) fails here, with its path, rather than later in ``to_jsonl``, the
audit log or the store.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import uuid
from collections.abc import Mapping
from typing import Any, NoReturn

from ._accel import speedups
from .errors import SerializationError

__all__ = ["FrozenDict", "FrozenList", "freeze", "freeze_payload", "thaw"]


def _readonly(self: object, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(
        f"{type(self).__name__} is read-only: event payloads are shared with other handlers. "
        "Copy it first, e.g. dict(event.payload) or copy.deepcopy(event.payload)."
    )


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses mutation (payloads and nested mappings)."""

    __slots__ = ()
    __setitem__ = __delitem__ = _readonly
    clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return dict.__repr__(self)


class FrozenList(list[Any]):
    """A ``list`` that refuses mutation (nested sequences in payloads)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _readonly
    append = extend = insert = pop = remove = clear = sort = reverse = _readonly

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def __repr__(self) -> str:
        return list.__repr__(self)


_SCALARS = frozenset({str, int, float, bool, type(None)})
# Immutable values that the JSON encoder knows how to write (see _json.default).
_KEPT = (_dt.datetime, _dt.date, _dt.time, _dt.timedelta, uuid.UUID, decimal.Decimal, bytes, enum.Enum)


def freeze(value: Any, path: str = "payload", finite: bool = True) -> Any:
    """Return a deep read-only copy of ``value``; raise SerializationError for unknown types.

    ``finite=False`` lets NaN and infinities through: for records written before
    publish refused them (``Event.from_dict``), which are read as they were written."""
    cls = type(value)
    if cls in _SCALARS:
        if cls is float and value - value and finite:  # NaN and infinities (finite: 0.0)
            _non_finite(value, path)
        return value
    if isinstance(value, Mapping):
        return FrozenDict({_key(k, path): freeze(v, f"{path}[{k!r}]", finite) for k, v in value.items()})
    if cls is list or cls is FrozenList or cls is tuple or isinstance(value, (list, tuple)):
        items = [freeze(v, f"{path}[{i}]", finite) for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else FrozenList(items)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v, f"{path}{{...}}", finite) for v in value)
    if isinstance(value, (str, int, float)) and not isinstance(value, enum.Enum):
        if isinstance(value, float) and value - value and finite:
            _non_finite(value, path)
        return value
    if isinstance(value, enum.Enum):
        _check_enum_value(value, path, finite)  # JSON writes its value: that must be writable too
        return value
    if isinstance(value, _KEPT):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return freeze({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, path, finite)
    dump = getattr(value, "model_dump", None)  # pydantic v2 models
    if callable(dump):
        return freeze(dump(mode="python"), path, finite)
    raise SerializationError(
        f"{path} holds a {cls.__module__}.{cls.__qualname__}, which cannot be serialised to JSON. "
        "Use JSON types, datetime/date/time, UUID, Decimal, Enum, bytes, set, a dataclass or a "
        "pydantic model, or convert the value before publishing.",
        path,
    )


def _non_finite(value: float, path: str) -> NoReturn:
    raise SerializationError(
        f"{path} is {value!r}, which JSON cannot carry (the audit log, the store and "
        "to_jsonl() would write invalid JSON); send None, a string, or a finite number",
        path,
    )


def _check_enum_value(member: enum.Enum, path: str, finite: bool) -> None:
    """An Enum is kept as it is, and written as its value: refuse a value JSON cannot carry."""
    where = f"{path}.value"
    try:
        freeze(member.value, where, finite)
    except RecursionError:
        raise SerializationError(
            f"{where} ({type(member).__qualname__}.{member.name}) contains itself, which JSON "
            "cannot write; give the Enum a plain value or publish member.name",
            where,
        ) from None


_KEY_VALUES = (str, int, float, bool, type(None))


def _key(key: Any, path: str) -> Any:
    """Check a non-str payload key: kept as it is, written by ``to_jsonl`` as JSON
    writes it (an int, float, bool or None key as text; an Enum key as its value;
    a UUID key as its canonical string)."""
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key
    if isinstance(key, uuid.UUID):
        return key
    where = f"{path}[{key!r}]"
    if isinstance(key, enum.Enum):
        if isinstance(key.value, _KEY_VALUES) and not isinstance(key.value, enum.Enum):
            return key
        raise SerializationError(
            f"the key {where} is an Enum whose value {key.value!r} cannot be a JSON object "
            "key (it must be a str, int, float, bool or None); use another key, such as "
            "key.name, before publishing",
            where,
        )
    raise SerializationError(
        f"the key {where} is a {type(key).__qualname__}; JSON object keys must be str, int, "
        "float, bool or None (an Enum with such a value, or a UUID, is written as that value "
        "or string); convert the key before publishing",
        where,
    )


def _py_freeze_payload(payload: Mapping[str, Any], /) -> FrozenDict:
    """Freeze a publish payload; the common flat-scalar case costs one dict copy."""
    if type(payload) is FrozenDict:
        return payload
    scalars = _SCALARS
    for key, value in payload.items():
        cls = type(value)
        # a float costs one more test: NaN and infinities (value - value is not 0.0)
        if cls not in scalars or type(key) is not str or (cls is float and value - value):
            result = freeze(payload)
            assert isinstance(result, FrozenDict)
            return result
    return FrozenDict(payload)


if speedups is not None:
    speedups.set_frozen(FrozenDict, _py_freeze_payload)
# the C twin handles a flat-scalar dict itself and calls the Python one for the rest
freeze_payload = _py_freeze_payload if speedups is None else speedups.freeze_payload


def thaw(value: Any) -> Any:
    """Return an ordinary mutable deep copy of a frozen value."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    if isinstance(value, tuple):
        return tuple(thaw(v) for v in value)
    if isinstance(value, frozenset):
        return {thaw(v) for v in value}
    return value
