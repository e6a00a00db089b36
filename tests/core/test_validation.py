"""1.x validation API."""

from __future__ import annotations

import pytest

from aperion_event_bus import (
    EVENT_TYPE_PATTERN,
    Event,
    EventBus,
    EventValidator,
    ValidationError,
    extract_action,
    extract_domain,
    is_valid_event_type,
)


def test_pattern_and_helpers() -> None:
    assert EVENT_TYPE_PATTERN == r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
    assert is_valid_event_type("user.created")
    assert is_valid_event_type("a.b.c")
    for bad in ["User.created", "user", "user.", ".user", "user-created.x", "", None, 3]:
        assert not is_valid_event_type(bad)
    assert extract_domain("a.b.c") == "a"
    assert extract_action("a.b.c") == "b.c"
    assert extract_action("abc") is None


def test_lenient_validator_reports() -> None:
    v = EventValidator()
    result = v.validate_event_type("BadName")
    assert not result.valid and not result.ok
    assert "must follow {domain}.{action}" in result.errors[0]
    warn = v.validate_event_type("system.custom_thing")
    assert warn.valid and warn.warnings
    assert v.validate_event_type("system.handler_error").warnings == []


def test_strict_validator_raises() -> None:
    v = EventValidator(strict=True)
    with pytest.raises(ValidationError, match=r"must follow \{domain\}\.\{action\}") as info:
        v.validate_event_type("nodot")
    assert info.value.event_type == "nodot"


def test_allowed_domains_source_payload_custom_pattern() -> None:
    v = EventValidator(allowed_domains=["user"], require_source=True)
    assert not v.validate_event_type("order.created").valid
    assert not v.validate_source(None).valid
    assert v.validate_source("svc").valid
    assert not v.validate_payload({"a": 1}, ["a", "b"]).valid
    assert not v.validate_payload([1], None).valid
    combined = v.validate("user.created", {"a": 1}, "svc", ["a"])
    assert combined.valid
    custom = EventValidator(custom_pattern=r"^[A-Z]+\.[A-Z]+$")
    assert custom.validate_event_type("USER.CREATED").valid


def test_bus_validate_events_strict_by_default() -> None:
    bus = EventBus(validate_events=True)
    try:
        with pytest.raises(ValidationError, match="must follow"):
            bus.emit("NotValid", {})
        assert bus.emit("user.created", {})
    finally:
        bus.shutdown(1)


def test_emit_argument_errors_match_1x() -> None:
    bus = EventBus()
    try:
        with pytest.raises(ValueError, match="event_type must be a non-empty string"):
            bus.emit("", {})
        with pytest.raises(ValueError, match="payload must be a dict"):
            bus.emit("a.b", [1])  # type: ignore[arg-type]
    finally:
        bus.shutdown(1)


async def test_publish_takes_any_mapping_payload_and_refuses_the_rest() -> None:
    """dict skips the (slow) ABC check; other mappings still pass it, non-mappings fail."""
    import collections
    import types

    async with EventBus(validate_events=True) as bus:
        seen: list[dict[str, object]] = []

        @bus.on("user.created")
        async def handler(e: Event) -> None:
            seen.append(dict(e.payload))

        await bus.publish("user.created", {"a": 1})
        await bus.publish("user.created", types.MappingProxyType({"b": 2}))
        await bus.publish("user.created", collections.OrderedDict(c=3))
        with pytest.raises(ValidationError, match="payload must be a dict"):
            await bus.publish("user.created", [("d", 4)])  # type: ignore[arg-type]
    assert seen == [{"a": 1}, {"b": 2}, {"c": 3}]
