"""Dataclass typed events: a payload that does not fit fails at publish with a
ValidationError naming the field (missing fields, values of the wrong simple type)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Optional, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aperion_event_bus import Event, EventBus, ValidationError, event_type
from aperion_event_bus.typed import schema_for


@event_type("order.placed")
@dataclasses.dataclass(frozen=True)
class Placed:
    order_id: str
    qty: int
    price: float
    gift: bool = False
    note: Optional[str] = None  # noqa: UP045 - the typing spelling is checked too
    tags: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    code: Union[int, str] = 0  # noqa: UP007
    when: dt.datetime | None = None  # not a simple type: not checked


GOOD: dict[str, Any] = {"order_id": "o-1", "qty": 2, "price": 9.5}


async def test_a_fitting_payload_is_delivered_as_the_class() -> None:
    got: list[Placed] = []
    async with EventBus() as bus:
        bus.on(Placed, got.append)
        await bus.publish("order.placed", dict(GOOD, price=10, note="x", code="A1", tags=["a"]))
    assert got == [Placed("o-1", 2, 10, note="x", code="A1", tags=["a"])]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"qty": "lots"}, "qty"),
        ({"qty": True}, "qty"),  # a bool is not an int here
        ({"qty": 2.5}, "qty"),
        ({"price": "9.50"}, "price"),
        ({"gift": 1}, "gift"),
        ({"note": 5}, "note"),
        ({"tags": "a,b"}, "tags"),
        ({"extra": [1]}, "extra"),
        ({"code": 1.5}, "code"),
        ({"order_id": None}, "order_id"),
    ],
)
async def test_a_value_of_the_wrong_type_fails_at_publish_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    async with EventBus() as bus:
        bus.on(Placed, lambda e: None)
        with pytest.raises(ValidationError) as info:
            await bus.publish("order.placed", dict(GOOD, **change))
    assert info.value.field == field
    assert repr(field) in str(info.value)


@pytest.mark.parametrize("missing", ["order_id", "qty", "price"])
def test_a_missing_field_is_named(missing: str) -> None:
    payload = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ValidationError) as info:
        schema_for(Placed).validate(payload)
    assert info.value.field == missing
    assert f"missing field {missing!r}" in str(info.value)


def test_unchecked_annotations_are_left_to_the_class() -> None:
    schema_for(Placed).validate(dict(GOOD, when="not a datetime"))  # documented: not checked


@given(st.one_of(st.integers(), st.floats(allow_nan=False), st.text(), st.booleans(), st.none()))
def test_qty_accepts_exactly_the_ints(value: Any) -> None:
    schema = schema_for(Placed)
    fits = type(value) is int
    try:
        schema.validate(dict(GOOD, qty=value))
    except ValidationError as exc:
        assert not fits and exc.field == "qty"
    else:
        assert fits


def test_forward_references_that_cannot_be_resolved_skip_the_check() -> None:
    @event_type("ref.made")
    @dataclasses.dataclass
    class Ref:
        other: Unknown  # type: ignore[name-defined]  # noqa: F821

    schema_for(Ref).validate({"other": 1})


async def test_event_objects_of_a_typed_type_are_checked_too() -> None:
    async with EventBus() as bus:
        bus.on(Placed, lambda e: None)
        with pytest.raises(ValidationError, match="'qty'"):
            await bus.publish(Event("order.placed", dict(GOOD, qty="x")))
