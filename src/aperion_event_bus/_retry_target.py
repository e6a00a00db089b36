"""Which live subscription a DLQ retry runs: the one that failed, or none.

A dead-letter entry names the subscription that failed by its id, its ``name``
(when it was given one) and its handler name, and records its patterns. Ids are
new after a restart, and handler names collide (instances of one class,
``functools.partial`` objects, lambdas of one module), so the lookup goes from the
most to the least precise and never guesses: it returns exactly one subscription
that matches the event's type, or none (with a warning saying why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ._wiring import library_logger
from .events import Event
from .subscriptions import Subscription, SubscriptionRegistry

__all__ = ["RetryTarget"]

logger = library_logger("aperion_event_bus.bus")


@dataclasses.dataclass(frozen=True)
class RetryTarget:
    """What a dead-letter entry knows about the subscription that failed."""

    subscription_id: str | None = None
    subscription_name: str | None = None
    handler_name: str | None = None
    patterns: frozenset[str] | None = None

    def find(self, registry: SubscriptionRegistry, event: Event) -> tuple[Subscription, ...]:
        """``(subscription,)`` to run again, or ``()`` when none can be told apart.

        1. the live subscription with the recorded id (same process: it is the one);
        2. else the live subscriptions with the recorded ``name`` that match the
           event's type;
        3. else those whose handler name is the recorded one, that match it and
           bear no other name;
        4. several left: those with exactly the recorded patterns, if any.
        Exactly one left is run; none or several: nothing is (logged).
        """
        if self.subscription_id is not None:
            sub = registry.get(self.subscription_id)
            if sub is not None:
                if sub.alive:
                    return (sub,)
                self._warn(event, "its subscription is inactive or its handler is gone", ())
                return ()
        live = [s for s in registry.all() if s.handler is not None and s.matches(event.event_type)]
        found: list[Subscription] = []
        if self.subscription_name is not None:
            found = [s for s in live if s.name == self.subscription_name]
        if not found and self.handler_name is not None:
            # a named subscription is another one's only if it bears that name
            found = [
                s
                for s in live
                if s.handler_name == self.handler_name
                and (s.name is None or s.name == self.subscription_name)
            ]
        if len(found) > 1 and self.patterns is not None:
            same = [s for s in found if s.event_types == self.patterns]
            found = same or found
        if len(found) == 1:
            return (found[0],)
        if found:
            self._warn(
                event,
                f"{len(found)} live subscriptions could be the one that failed; give each "
                "subscription a distinct name (bus.on(..., name='...')) so that its DLQ "
                "entries name it",
                found,
            )
        else:
            self._warn(
                event,
                "no live subscription with its id, name or handler name matches the event "
                "type; subscribe the handler again before retrying",
                (),
            )
        return ()

    def _warn(self, event: Event, why: str, subs: Iterable[Subscription]) -> None:
        candidates = ", ".join(
            f"{s.subscription_id} {sorted(s.event_types)}" for s in subs
        )
        logger.warning(
            "DLQ retry of %s %s for %s not run: %s%s",
            event.event_type,
            event.event_id,
            self.subscription_name or self.handler_name or self.subscription_id,
            why,
            f" (candidates: {candidates})" if candidates else "",
        )
