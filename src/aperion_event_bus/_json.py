"""JSON encoding of envelopes and payloads, with orjson when installed.

Non-JSON payload values are written in a documented form so nothing is ever
silently dropped: datetime/date/time -> ISO 8601 string, timedelta -> seconds
(float), UUID -> canonical string, Decimal -> string, Enum -> its value,
bytes -> base64 string, set/frozenset -> list (sorted when sortable), dataclass
and pydantic model -> object of their fields. Anything else raises
SerializationError naming the type. Object keys: str, int, float, bool and None
as JSON writes them, an Enum key as its value and a UUID key as its string (the
stdlib encoder refuses those two; ``dumps`` then retries with them converted, so
the common case pays nothing).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import json
import uuid
from collections.abc import Callable
from typing import Any

from .errors import SerializationError

__all__ = ["dumps", "json_default", "loads", "storable"]


def storable(text: str) -> str:
    """``text`` with any lone surrogate (not encodable as UTF-8: a handler's error
    message can hold one) written as its escape ``\\udXXX``; inside a JSON string
    that is the JSON escape of the same character. Text that encodes is returned as
    is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_default(value: Any) -> Any:
    """``default=`` hook for json.dumps: the documented fallback forms."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain_keys(value.value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            items.sort()
        except TypeError:
            pass
        return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain_keys({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise SerializationError(
        f"cannot serialise a {type(value).__module__}.{type(value).__qualname__} to JSON; "
        "convert it to a JSON type before publishing",
    )


def _plain_keys(obj: Any) -> Any:
    """``obj`` with Enum and UUID object keys replaced by their JSON forms (deeply),
    for the encoders that refuse them; ``freeze`` has checked that an Enum key's
    value is a str, int, float, bool or None."""
    if isinstance(obj, dict):
        return {_plain_key(k): _plain_keys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_keys(v) for v in obj]
    return obj


def _plain_key(key: Any) -> Any:
    if isinstance(key, enum.Enum) and not isinstance(key, (str, int, float)):
        return key.value
    if isinstance(key, uuid.UUID):
        return str(key)
    return key


try:  # pragma: no cover - exercised when the orjson extra is installed
    import orjson as _orjson

    _OPTS = _orjson.OPT_NON_STR_KEYS

    def dumps(obj: Any) -> str:
        """Compact JSON text for ``obj`` (documented fallbacks for non-JSON values)."""
        try:
            text: str = _orjson.dumps(obj, default=json_default, option=_OPTS).decode("utf-8")
            return text
        except _orjson.JSONEncodeError as exc:
            cause = exc.__cause__
            if isinstance(cause, SerializationError):
                raise cause from None
            # orjson is stricter than json (e.g. ints beyond 64 bits): fall back.
            return json.dumps(
                _plain_keys(obj), default=json_default, separators=(",", ":"), ensure_ascii=False
            )

    def loads(text: str | bytes) -> Any:
        """Parse JSON text."""
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:
            # orjson is stricter than json (ints beyond 64 bits, 1.x lines with NaN):
            # what the stdlib reads (and dumps above falls back to) stays readable
            return json.loads(text)

    #: orjson writes the envelope itself (see the stdlib branch).
    make_encoder: Callable[[], Callable[[Any, int], list[str]]] | None = None

except ImportError:
    import json.encoder
    from json.encoder import encode_basestring

    c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)

    def _stdlib_dumps(obj: Any) -> str:
        """Compact JSON text for ``obj`` (documented fallbacks for non-JSON values)."""
        try:
            return json.dumps(obj, default=json_default, separators=(",", ":"), ensure_ascii=False)
        except SerializationError:
            raise
        except TypeError:  # an Enum or UUID object key (or a real error: raised again)
            return json.dumps(
                _plain_keys(obj), default=json_default, separators=(",", ":"), ensure_ascii=False
            )

    if c_make_encoder is None:  # pragma: no cover - CPython always has the C encoder
        dumps = _stdlib_dumps
    else:

        def dumps(obj: Any) -> str:
            """Compact JSON text for ``obj`` (documented fallbacks for non-JSON values).

            What ``json.dumps`` with these options does, minus building a
            ``JSONEncoder`` per call (a third of the cost for an event envelope)."""
            if type(obj) is str:
                return encode_basestring(obj)
            encode = c_make_encoder(
                {}, json_default, encode_basestring, None, ":", ",", False, False, True
            )
            try:
                return "".join(encode(obj, 0))
            except SerializationError:
                raise
            except TypeError:  # an Enum or UUID object key (or a real error: raised again)
                return "".join(encode(_plain_keys(obj), 0))

    def _make_encoder() -> Callable[[Any, int], list[str]]:
        return c_make_encoder(  # type: ignore[no-any-return]
            {}, json_default, encode_basestring, None, ":", ",", False, False, True
        )

    #: A C encoder making exactly what ``dumps`` makes (``"".join(encoder(obj, 0))``),
    #: for callers that encode many values in a loop; None when ``dumps`` is orjson.
    make_encoder = None if c_make_encoder is None else _make_encoder

    def loads(text: str | bytes) -> Any:
        """Parse JSON text."""
        return json.loads(text)
