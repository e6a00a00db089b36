"""Quick start: a small order service wired through the event bus.

Three HTTP-like requests arrive with correlation ids. Handlers run sync (in the
thread pool) and async (on the loop), publish nested events, and one of them
fails so you can see how failures are reported. Then the same service runs on the
embedded durable store (SQLite): a durable subscriber fails, the service
"restarts", and the delivery it did not acknowledge is redelivered on start.
Run with ``make demo``.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

from aperion_event_bus import (
    Event,
    EventBus,
    delivery_attempt,
    extract_correlation_id_from_headers,
    get_correlation_id,
    is_replay,
)

logging.basicConfig(level=logging.CRITICAL)  # the demo prints its own story


def line(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')}  {text}")


async def main() -> None:
    async with EventBus(name="shop", handler_timeout=2.0) as bus:

        @bus.on("order.placed", priority=100)
        def reserve_stock(event: Event) -> dict[str, int]:
            # Sync handler: runs in the bus thread pool, never on the event loop.
            time.sleep(0.01)
            line(f"[stock]    reserved {event.payload['qty']} x {event.payload['sku']} "
                 f"(correlation {get_correlation_id()})")
            return {"reserved": event.payload["qty"]}

        @bus.on("order.placed", priority=50)
        async def charge_card(event: Event) -> str:
            await asyncio.sleep(0.01)
            if event.payload["amount"] > 1000:
                raise RuntimeError("card declined: amount over limit")
            # A nested event: same correlation id, causation id = this event's id.
            await bus.publish("payment.captured", {"order_id": event.payload["order_id"]})
            return "charged"

        @bus.on("payment.captured")
        async def send_receipt(event: Event) -> None:
            line(f"[email]    receipt for {event.payload['order_id']} "
                 f"(caused by {event.causation_id[:16]}..., correlation {event.correlation_id})")

        @bus.on("system.handler_error")
        def alert(event: Event) -> None:
            p = event.payload
            line(f"[alert]    {p['handler_name'].rsplit('.', 1)[-1]} failed on "
                 f"{p['original_event_type']}: {p['error_type']}: {p['error']}")

        @bus.on("order.*", priority=1)
        async def audit(event: Event) -> None:
            line(f"[audit]    {event.event_type} {event.event_id[:16]}... "
                 f"correlation={event.correlation_id}")

        requests = [
            ({"X-Correlation-ID": "req-1001"}, {"order_id": "ord-1", "sku": "book", "qty": 1, "amount": 25}),
            ({"X-Request-ID": "req-1002"}, {"order_id": "ord-2", "sku": "lamp", "qty": 2, "amount": 80}),
            ({}, {"order_id": "ord-3", "sku": "piano", "qty": 1, "amount": 4200}),
        ]
        print("Handling three requests:")
        for headers, body in requests:
            correlation_id = extract_correlation_id_from_headers(headers)
            result = await bus.publish("order.placed", body, correlation_id=correlation_id,
                                       source="api")
            status = "ok" if result.ok else f"{len(result.errors)} handler(s) failed"
            line(f"[api]      POST /orders {body['order_id']} -> {status}; "
                 f"handler values {result.values}")
        await bus.drain(timeout=5)
        stats = bus.get_stats()
        print(f"\nDone: {stats['events_published']} events published, "
              f"{stats['handler_failures']} handler failure(s), "
              f"{stats['pending_events']} pending.")


async def durable(db: Path) -> None:
    print(f"\nDurable: the embedded store ({db.name}, SQLite, group commit):")
    warehouse_up = False

    async def run_service() -> None:
        async with EventBus(name="shop", store=f"sqlite:///{db}") as bus:

            @bus.on("order.shipped", name="shipping-label", durable=True)
            async def print_label(event: Event) -> None:
                attempt = delivery_attempt()
                if not warehouse_up:
                    raise RuntimeError("warehouse printer offline")
                line(f"[label]    {event.payload['order_id']} printed (attempt {attempt})")

            order = "ord-4" if warehouse_up else "ord-1"
            result = await bus.publish("order.shipped", {"order_id": order})
            line(f"[api]      shipped {order}: committed before publish returned; "
                 f"{len(result.errors)} handler failure(s)")
            await bus.drain(timeout=5)

    await run_service()  # the label printer fails: the delivery stays pending
    warehouse_up = True
    line("[ops]      restart with the printer back")
    await run_service()  # ord-1 is redelivered on start, before the new ord-4

    async with EventBus(name="shop", store=f"sqlite:///{db}") as bus:
        seen: list[str] = []

        async def audit_trail(event: Event) -> None:
            seen.append(f"{event.payload['order_id']} (replay={is_replay()})")

        count = await bus.replay(types=["order.*"], to=audit_trail)
        line(f"[replay]   {count} stored events: {', '.join(seen)}")


async def demo() -> None:
    await main()
    with tempfile.TemporaryDirectory() as tmp:
        await durable(Path(tmp) / "events.db")


if __name__ == "__main__":
    asyncio.run(demo())
