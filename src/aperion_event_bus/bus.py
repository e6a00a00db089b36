"""EventBus: the public facade (async API, sync API and the 1.x surface) over the engine.

Lifecycle: the bus binds to an event loop the first time it needs one. Inside
async code (``async with EventBus() as bus`` or a first ``await bus.publish``)
that is the application's running loop; from plain sync code the bus starts its
own daemon loop thread. ``close``/``shutdown`` drain what is pending (up to a
timeout), cancel async handlers still running and stop the thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context, copy_context
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import _recovery
from ._accel import speedups
from ._frozen import freeze_payload
from ._ids import event_id_at, new_event_id
from ._retry_target import RetryTarget
from ._runtime import LoopThread, running_loop
from ._start_recovery import StartRecovery
from ._wiring import AuditSink, LazyRedactor, MetricsObserver, library_logger
from .context import _correlation_id, _current_event
from .dispatch import ABANDONED, DROPPED, Dispatcher, OverflowPolicy, _Chain, _resolve
from .errors import BusClosedError, ConfigurationError, EventBusError, ValidationError
from .events import Event, _make_event
from .patterns import compile_pattern
from .results import HandlerResult, PublishResult, _handler_result
from .subscriptions import Subscription, SubscriptionRegistry
from .typed import EventSchema, event_type_of
from .validation import EventValidator

if TYPE_CHECKING:
    from .observability.collector import MetricsCollector
    from .storage.sqlite import SQLiteStore

__all__ = ["HANDLER_ERROR_EVENT", "EventBus", "Tap"]

logger = library_logger("aperion_event_bus.bus")
HANDLER_ERROR_EVENT = "system.handler_error"
F = TypeVar("F", bound=Callable[..., Any])
# An observer of every published event (see EventBus.add_tap); not a subscription.
Tap = Callable[[Event], None]
_time = time.time
_perf = time.perf_counter
_running_loop = asyncio._get_running_loop
_current_event_get = _current_event.get
_correlation_get = _correlation_id.get
_build_event = speedups.build_event if speedups is not None else None  # C twin of the tail of _envelope
_DROPPED_ID = ""
_MISSING = object()


class EventBus:
    """Publish/subscribe event bus for sync and async Python.

    The positional parameters are those of 1.x. ``event_log_path`` (with
    ``enable_audit``) writes a redacted JSONL audit line for every event;
    ``metrics`` takes a ``MetricsCollector`` or a ``MetricsBackend``;
    ``dead_letter_queue`` receives every final handler failure; ``redactor``
    replaces the default ``Redactor`` wherever the bus writes text.
    New, keyword-only options: ``parallel_handlers`` (run an event's handlers
    concurrently instead of in priority order), ``tracing`` (True, or an
    ``EventTracer``: OpenTelemetry spans and W3C trace context on every event) and
    ``name`` (used for thread names) and ``store`` (a ``SQLiteStore`` or a
    ``"sqlite:///path/events.db"`` URL: every published event is committed before
    ``publish``/``emit`` return, durable subscriptions get at-least-once delivery,
    see ``recover`` and ``replay``; the bus opens the store and closes it on close)
    and ``recover_on_start`` (with a store: each durable subscription gets its
    unacknowledged deliveries when the bus starts or when it is subscribed later,
    before newer events; False leaves them to ``recover``).
    """

    def __init__(
        self,
        event_log_path: str | None = None,
        max_concurrent_handlers: int = 10,
        max_workers: int | None = None,
        enable_audit: bool = True,
        redactor: Any = None,
        handler_timeout: float | None = 30.0,
        max_pending_events: int | None = None,
        overflow_policy: OverflowPolicy | str = OverflowPolicy.DROP,
        max_log_size_bytes: int | None = None,
        max_log_files: int = 5,
        metrics: Any = None,
        validate_events: bool = False,
        validator: EventValidator | None = None,
        dead_letter_queue: Any = None,
        *,
        parallel_handlers: bool = False,
        tracing: Any = None,
        name: str = "event-bus",
        store: SQLiteStore | str | None = None,
        recover_on_start: bool = True,
    ) -> None:
        if handler_timeout is not None and handler_timeout <= 0:
            raise ConfigurationError("handler_timeout must be a positive number of seconds or None")
        workers = max_workers if max_workers is not None else max_concurrent_handlers
        if workers < 1:
            raise ConfigurationError("max_workers / max_concurrent_handlers must be >= 1")
        self.name = name
        self.max_concurrent_handlers = workers
        self.handler_timeout = handler_timeout
        self.max_pending_events = max_pending_events
        self.overflow_policy = OverflowPolicy.parse(overflow_policy)
        self.event_log_path = event_log_path
        self.enable_audit = enable_audit
        self.max_log_size_bytes = max_log_size_bytes
        self.max_log_files = max_log_files
        self.redactor = _checked_redactor(redactor)
        self._redactor = LazyRedactor(redactor)
        self._redactor.warm()  # here, not on the event loop at the first failure
        if validate_events and validator is None:
            validator = EventValidator(strict=True)
        self.validator = validator
        self.validate_events = validator is not None
        self.metrics = _collector(metrics)
        if self.metrics is not None:
            self._redactor.on_counts = self.metrics.record_redactions  # redactions by type
        self.dead_letter_queue = dead_letter_queue = _checked_dlq(dead_letter_queue)
        self.tracer = _tracer(tracing, self._redactor)
        self.store = _open_store(store)
        self._start_recovery = (
            StartRecovery(self.store) if self.store is not None and recover_on_start else None
        )
        self._starting = False  # binding: other threads wait (see _ensure_loop)
        if dead_letter_queue is True:  # a DLQ of its own: in the store when there is one
            from .dlq import DeadLetterQueue

            backend = self.store.dlq_backend() if self.store is not None else None
            self.dead_letter_queue = dead_letter_queue = DeadLetterQueue(backend=backend)
        self._durable: dict[str, str] = {}  # subscription id -> durable name
        # matched subscriptions (the registry's cached tuple) -> their durable names;
        # cleared whenever _durable changes
        self._names_of: dict[tuple[Subscription, ...], tuple[str, ...]] = {}
        # (event id, subscription id) -> DLQ retries running now (see _retry_now)
        self._retrying: dict[tuple[str, str], int] = {}
        self._audit: AuditSink | None = None
        if enable_audit and event_log_path is not None:
            from .storage.audit_log import AuditLogger

            self._audit = AuditSink(
                AuditLogger(event_log_path, True, self._redactor, max_log_size_bytes, max_log_files)
            )
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-handler")
        self._registry = SubscriptionRegistry()
        self._schemas: dict[str, EventSchema] = {}
        self._dispatcher = Dispatcher(
            executor=self.executor,
            max_pending=max_pending_events,
            policy=self.overflow_policy,
            default_timeout=handler_timeout,
            parallel=parallel_handlers,
            on_failure=self._on_handler_failure,
            on_drop=self._on_drop,
        )
        # the collector when it records something, else None: the hot paths test this
        self._metrics: MetricsCollector | None = None
        if self.metrics is not None:
            self._wire_metrics()
            self.metrics.watch(self._wire_metrics)
        if self.tracer is not None:
            self._dispatcher.span = self.tracer.handler_span
        self._dispatcher.need_loop = self._ensure_loop
        self._dispatcher.on_cancelled = self._on_publisher_cancelled
        self.parallel_handlers = parallel_handlers
        self._runtime: LoopThread | None = None
        self._bind_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._last_ctx: Context | None = None  # see _snapshot
        self._taps: tuple[Tap, ...] = ()  # see add_tap; changed copy-on-write
        # features the quick envelope path skips: take the full path instead
        # (tracing and metrics are handled on the quick path too)
        self._slow_publish = self._needs_full_path()
        self._stats_lock = threading.Lock()
        self._published = 0
        self._failures = 0
        self._timeouts = 0
        self._dropped = 0

    # ================================================================ binding
    def _ensure_loop(self) -> Dispatcher:
        """Bind to the caller's running loop, or start the bus's own loop thread."""
        d = self._dispatcher
        loop = d.loop
        if loop is not None and not self._starting and not loop.is_closed():
            return d
        if self._closed:
            raise BusClosedError(f"bus {self.name!r} is closed; create a new EventBus")
        with self._bind_lock:
            loop = d.loop
            if loop is not None and not loop.is_closed():
                return d
            if loop is not None:
                self._forget_closed_loop()
            start = self._start_recovery
            # read what is pending before any thread can append (they all come
            # through here first), queue it before any of them can publish
            reads = start.read(self._durable_subscriptions()) if start is not None else []
            self._starting = True
            try:
                running = running_loop()
                if running is not None:
                    d.bind(running)
                else:
                    self._runtime = LoopThread(f"{self.name}-loop")
                    d.bind(self._runtime.loop)
                if start is not None:
                    start.queue(d, reads)
            finally:
                self._starting = False
        return d

    def _durable_subscriptions(self) -> list[tuple[Subscription, str]]:
        """(subscription, durable name) of every durable subscription now."""
        found = []
        for sub_id, name in list(self._durable.items()):
            sub = self._registry.get(sub_id)
            if sub is not None:
                found.append((sub, name))
        return found

    def _forget_closed_loop(self) -> None:
        """The loop we were bound to was closed under us: reset lane state."""
        d = self._dispatcher
        for sub in self._registry.all():
            sub._lane = None
        if self._start_recovery is not None:
            self._start_recovery.reset()  # its queued redeliveries are lost with the loop
        lost = d.reset_pending()
        if lost:
            logger.warning(
                "bus %s: the event loop it ran on was closed with %d event(s) unfinished; "
                "they are lost. Close the bus (await bus.close()) before its loop ends.",
                self.name,
                lost,
            )

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop handlers run on (None until the bus first needs one)."""
        return self._dispatcher.loop

    # ========================================================== subscriptions
    @property
    def subscriptions(self) -> list[Subscription]:
        """Live subscriptions, highest priority first (1.x attribute)."""
        return list(self._registry.all())

    def get_subscriptions(self) -> list[Subscription]:
        """A copy of the subscription list (1.x)."""
        return list(self._registry.all())

    def subscribe(
        self,
        handler: Callable[..., Any],
        event_types: str | list[str] | type,
        priority: int = 100,
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Subscribe ``handler`` (1.x); returns the ``sub_...`` id. See ``on`` for options."""
        return self._add(handler, event_types, priority, metadata, **options).subscription_id

    def on(
        self,
        target: str | list[str] | type,
        handler: Callable[..., Any] | None = None,
        *,
        priority: int = 100,
        timeout: float | None = None,
        retries: int = 0,
        retry_backoff: float = 0.1,
        concurrency: int = 1,
        name: str | None = None,
        weak: bool = True,
        metadata: Mapping[str, Any] | None = None,
        durable: bool = False,
    ) -> Any:
        """Subscribe to an event type, a pattern (``user.*``, ``*.created``, ``*``), a
        list of them, or a typed-event class (handlers then get validated instances).

        As a decorator it returns the function unchanged; called with a handler it
        returns the Subscription. ``timeout`` (seconds, default: the bus's
        handler_timeout), ``retries`` with exponential ``retry_backoff``,
        ``concurrency`` (> 1: deliveries may overlap and lose their ordering),
        ``name`` (stable name; used for logs, metrics and durable delivery),
        ``weak`` (bound methods are held weakly unless False), ``durable`` (needs
        ``name`` and a bus ``store``: every delivery is recorded and acknowledged after
        success; unacknowledged ones are redelivered by ``recover()``; the handler is
        then held strongly).
        """
        options = dict(
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            concurrency=concurrency,
            name=name,
            weak=weak,
            durable=durable,
        )
        if handler is not None:
            return self._add(handler, target, priority, metadata, **options)

        def decorate(func: F) -> F:
            self._add(func, target, priority, metadata, **options)
            return func

        return decorate

    def _add(
        self,
        handler: Callable[..., Any],
        target: str | list[str] | type,
        priority: int,
        metadata: Mapping[str, Any] | None,
        **options: Any,
    ) -> Subscription:
        if self._closed:
            raise BusClosedError(f"bus {self.name!r} is closed; create a new EventBus")
        durable = bool(options.pop("durable", False))
        if durable:
            handler = self._durable_handler(handler, options)
        schema: EventSchema | None = None
        patterns: Iterable[str]
        if isinstance(target, type):
            schema = self._schema(target)
            patterns = [schema.event_type]
        elif isinstance(target, str):
            patterns = [target]
        else:
            patterns = list(target)
        try:
            sub = Subscription(
                handler,
                patterns,
                priority,
                metadata=metadata,
                schema=schema,
                on_dead=self._on_subscriber_gone,
                **options,
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if durable:
            self._add_durable(sub, options["name"])
        else:
            self._registry.add(sub)
        return sub

    def _add_durable(self, sub: Subscription, name: str) -> None:
        """Register a durable subscription. On a bus already bound to its loop its
        start is now: its pending deliveries are read before it is registered (so
        none published from now on is among them) and queued ahead of anything
        published to it next."""
        d = self._dispatcher
        with self._bind_lock:
            if name in self._durable.values():
                raise ValidationError(f"a durable subscription named {name!r} already exists")
            loop = d.loop
            start = self._start_recovery
            if start is not None and loop is not None and not loop.is_closed():
                start.queue(d, start.read([(sub, name)]))
            self._registry.add(sub)
            self._durable[sub.subscription_id] = name
            self._names_of.clear()

    def _durable_handler(self, handler: Callable[..., Any], options: dict[str, Any]) -> Any:
        """Check a durable subscription's options; wrap its handler in the tracking adapter."""
        name = options.get("name")
        if not isinstance(name, str) or not name:
            raise ValidationError(
                "durable=True needs a stable subscription name: pass name='...' (pending "
                "deliveries are stored under it and redelivered to the subscription of that name)"
            )
        if self.store is None:
            raise ValidationError(
                "durable=True needs a store: create the bus with "
                "EventBus(store='sqlite:///path/events.db')"
            )
        if name in self._durable.values():
            raise ValidationError(f"a durable subscription named {name!r} already exists")
        if not callable(handler):
            raise ValidationError(f"handler must be callable, got {type(handler).__qualname__}")
        from .durable import _DurableAsync, _DurableSync
        from .subscriptions import is_async_callable

        options["weak"] = False  # the adapter holds the handler
        cls = _DurableAsync if is_async_callable(handler) else _DurableSync
        return cls(handler, self.store, name, int(options.get("retries", 0) or 0))

    def _durable_names(self, subs: tuple[Subscription, ...]) -> tuple[str, ...]:
        """The durable names among ``subs`` (computed once per matched tuple)."""
        durable = self._durable
        if not durable:
            return ()
        names = self._names_of.get(subs)
        if names is None:
            if len(self._names_of) >= 256:  # subscriptions churned: start over
                self._names_of.clear()
            names = tuple(durable[s.subscription_id] for s in subs if s.subscription_id in durable)
            self._names_of[subs] = names
        return names

    def _forget_durable(self, subscription_id: str) -> None:
        if self._durable.pop(subscription_id, None) is not None:
            self._names_of.clear()

    def _append_sync(self, event: Event, subs: tuple[Subscription, ...], api: str) -> None:
        """Commit ``event`` to the store from a plain thread (never from a loop thread)."""
        assert self.store is not None
        if running_loop() is not None:
            raise EventBusError(
                f"{api} cannot be used on a thread running an event loop when the bus has a "
                "store: committing the event would block the loop; use `await bus.publish(...)`"
            )
        self._ensure_loop()  # the redeliveries on start read what is pending first
        self.store.append_sync(event, self._durable_names(subs))

    def _schema(self, cls: type) -> EventSchema:
        name = event_type_of(cls)
        schema = self._schemas.get(name) if name else None
        if schema is None or schema.cls is not cls:
            schema = EventSchema(cls)
            self._schemas[schema.event_type] = schema
        return schema

    def _on_subscriber_gone(self, sub: Subscription) -> None:
        self._registry.remove(sub.subscription_id)
        self._dispatcher.close_lane(sub)

    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove a subscription by id (1.x); True if it existed."""
        sub = self._registry.remove(subscription_id)
        self._forget_durable(subscription_id)
        if sub is None:
            return False
        self._dispatcher.close_lane(sub)
        return True

    def off(self, target: str | Subscription | Callable[..., Any]) -> int:
        """Remove subscriptions by id, Subscription object or handler; returns how many."""
        if isinstance(target, Subscription):
            return int(self.unsubscribe(target.subscription_id))
        if isinstance(target, str):
            return int(self.unsubscribe(target))
        gone = self._registry.remove_where(lambda s: s.handler == target)
        for sub in gone:
            self._forget_durable(sub.subscription_id)
            self._dispatcher.close_lane(sub)
        return len(gone)

    # =============================================================== envelope
    def _prepare(
        self,
        event_or_type: Any,
        payload: Any,
        source: str | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> tuple[Event, tuple[Subscription, ...]]:
        """Validate and build the envelope; return it with the matching subscriptions."""
        if self._closing:
            raise BusClosedError(
                f"bus {self.name!r} is closing or closed; publish before close() or create a new bus"
            )
        if type(event_or_type) is str:
            event_type = event_or_type
            if payload is None:
                payload = {}
            elif type(payload) is not dict and not isinstance(payload, Mapping):  # ABC check: slow
                raise ValidationError("payload must be a dict", event_type)
            schema = self._schemas.get(event_type)
            if schema is not None:
                schema.validate(payload)
        elif isinstance(event_or_type, Event):
            return self._adopt(event_or_type, source, correlation_id, causation_id)
        elif event_type_of(type(event_or_type)) is not None:
            schema = self._schema(type(event_or_type))
            event_type = schema.event_type
            payload = schema.to_payload(event_or_type)
        else:
            raise ValidationError(
                "event_type must be a non-empty string"
                if not event_or_type or isinstance(event_or_type, str)
                else f"cannot publish a {type(event_or_type).__qualname__}: pass an event type "
                "string with a payload dict, an Event, or a typed-event instance"
            )
        if not event_type:
            raise ValidationError("event_type must be a non-empty string")
        if self.validator is not None:
            self._validate_type(event_type)
        event = self._envelope(event_type, payload, source, correlation_id, causation_id)
        return event, self._registry.match(event_type)

    def _traced_event(
        self,
        event_type: str,
        payload: Any,
        event_id: str,
        source: str | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> Event:
        """Envelope with the context of its PRODUCER span; without a correlation id
        the trace id is used."""
        assert self.tracer is not None
        # the parent is the current OpenTelemetry context: inside a handler, its
        # CONSUMER span; in a request, the request's span
        traceparent, tracestate, trace_id = self.tracer.publish_context(
            event_type, event_id, correlation_id, payload
        )
        return _make_event(
            event_type,
            payload,
            _time(),
            event_id,
            source,
            correlation_id if correlation_id is not None else trace_id or event_id,
            causation_id,
            traceparent,
            tracestate,
        )

    def _adopt(
        self,
        event: Event,
        source: str | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> tuple[Event, tuple[Subscription, ...]]:
        """Publish a ready-made Event, filling context fields it lacks."""
        if self.validator is not None:
            self._validate_type(event.event_type)
        schema = self._schemas.get(event.event_type)
        if schema is not None:
            schema.validate(event.payload)
        changes: dict[str, Any] = {}
        parent = _current_event.get()
        if source is not None:
            changes["source"] = source
        if correlation_id is not None:
            changes["correlation_id"] = correlation_id
        elif event.correlation_id is None:
            changes["correlation_id"] = (
                _correlation_id.get() or (parent.correlation_id if parent else None) or event.event_id
            )
        if causation_id is not None:
            changes["causation_id"] = causation_id
        elif event.causation_id is None and parent is not None:
            changes["causation_id"] = parent.event_id
        if changes:
            event = event.replace(**changes)
        return event, self._registry.match(event.event_type)

    def _validate_type(self, event_type: str) -> None:
        assert self.validator is not None
        result = self.validator.validate_event_type(event_type)  # strict validators raise
        if not result.valid:
            raise ValidationError("; ".join(result.errors), event_type)
        if result.warnings and logger.isEnabledFor(logging.WARNING):
            logger.warning("event type %s: %s", event_type, "; ".join(result.warnings))

    # ============================================================ async API
    async def publish(
        self,
        event: Any,
        payload: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        wait: bool = True,
    ) -> PublishResult:
        """Publish and (by default) wait until every matching handler has finished.

        ``event`` is an event type string (with ``payload``), an ``Event`` or a
        typed-event instance. With ``wait=False`` it returns once the event is
        accepted (awaiting a slot under the BLOCK policy); ``handler_results`` is
        then empty. A dropped event gives ``accepted=False``.
        """
        if payload is None:
            payload = {}
        if self._quick(event, payload):
            ev = self._envelope(event, payload, source, correlation_id, causation_id)
            subs = self._registry.match(event)
        else:
            ev, subs = self._prepare(event, payload, source, correlation_id, causation_id)
            if self.store is not None:  # wait for the commit: CommitBatch.committed inlined
                self._ensure_loop()  # the redeliveries on start read what is pending first
                batch, index = self.store.join_commit(ev, self._durable_names(subs))
                try:
                    failed = await batch.future
                except asyncio.CancelledError as exc:
                    failed = await batch.rejoin(exc)
                if failed is not None:
                    batch.raise_failed(failed, index)
            audit = self._audit
            if audit is not None and audit.backlog() > audit.HIGH_WATER:
                await audit.throttle()  # the audit writer is behind: wait instead of piling up
            if self._taps:
                self._tap(ev)
        d = self._ensure_loop()
        self._count_published(ev)
        if not subs:
            return PublishResult(ev)
        results: list[HandlerResult] | None = [] if wait else None
        chain = _Chain(ev, subs, self._snapshot(), None, results)
        on_loop = d.on_loop_thread()
        done: asyncio.Future[None] | None = None
        if wait and d._queued is not None:  # DROP_OLDEST may drop it as soon as it is admitted
            done = self._completion(chain, on_loop)
        nested = _current_event_get() is not None  # published from inside a handler
        admitted = d.try_admit(chain)
        if admitted is None:
            if nested:
                d.admit_forced()  # a handler waiting for a slot it holds itself would deadlock
            else:
                await d.admit_async(chain)
        elif admitted is False:
            return PublishResult(ev, accepted=False, dropped_reason="max_pending_events reached")
        if wait and on_loop and not self.parallel_handlers and (nested or d.lanes_idle(subs)):
            chain.notify = None  # run in this task: nothing to wait for
            await d.run_direct(chain)
            if chain.state == DROPPED:  # by DROP_OLDEST before it started
                return PublishResult(ev, accepted=False, dropped_reason="dropped as oldest queued event")
            return PublishResult(ev, True, results or [])
        if wait and done is None:
            done = self._completion(chain, on_loop)
        d.enqueue(chain)
        if done is None:
            return PublishResult(ev)
        await done
        if chain.state == DROPPED:  # by DROP_OLDEST while queued
            return PublishResult(ev, accepted=False, dropped_reason="dropped as oldest queued event")
        if chain.state == ABANDONED:
            return PublishResult(
                ev, accepted=False, dropped_reason="the bus closed before the event was handled"
            )
        return PublishResult(ev, True, results or [])

    @staticmethod
    def _completion(chain: _Chain, on_loop: bool) -> asyncio.Future[None]:
        """A future of the calling loop that resolves when ``chain`` finishes."""
        caller_loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = caller_loop.create_future()
        if on_loop:
            chain.notify = lambda _c: _resolve(done)
        else:

            def notify(_chain: _Chain) -> None:
                caller_loop.call_soon_threadsafe(_resolve, done)

            chain.notify = notify
        return done

    def publish_nowait(
        self,
        event: Any,
        payload: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Event | None:
        """Fire and forget: accept the event and return it (None if dropped).

        Under the BLOCK policy with the bus full, this raises BackpressureError
        when called from async code (it must not block the loop); use
        ``await bus.publish(..., wait=False)`` there. From a plain thread it waits.
        """
        d = self._dispatcher
        if _running_loop() is d.quick_loop and self._quick(event, payload):
            # Hot path: on the bus loop, unbounded: no admission lock, no ingress hop.
            ev = self._envelope(event, payload, source, correlation_id, causation_id)  # type: ignore[arg-type]
            # matched before it is counted: a miss checks the type (whitespace only: raises)
            subs = self._registry.cache.get(event) or self._registry.match(event)
            if self._audit is None and self._metrics is None:
                self._published += 1  # all _count_published would do, without the call
            else:
                self._count_published(ev)
            if subs:
                d.dispatch_new(ev, subs, self._snapshot())
            return ev
        ev, subs = self._prepare(event, payload, source, correlation_id, causation_id)
        if self.store is not None:
            self._append_sync(ev, subs, "publish_nowait")
        if self._taps:
            self._tap(ev)
        return ev if self._submit(ev, subs) else None

    def _snapshot(self) -> Context:
        """The publisher's context for the handlers of one event.

        Consecutive publishes usually happen in the same context; they then share
        one snapshot instead of keeping one Context object per queued event (the
        engine always runs handlers in a copy of it). Shared only when every value
        is the identical object."""
        ctx = copy_context()
        last = self._last_ctx
        if last is not None and len(ctx) == len(last):
            for var, value in ctx.items():
                if last.get(var, _MISSING) is not value:
                    break
            else:
                return last
        self._last_ctx = ctx
        return ctx

    def _quick(self, event: Any, payload: Any) -> bool:
        """True when ``event``/``payload`` may skip ``_prepare``: a plain event type and
        dict payload, no validator, typed schema, audit log or store, bus open."""
        return (
            type(event) is str
            and type(payload) is dict
            and not self._slow_publish
            and bool(event)
            and event not in self._schemas
        )

    def _envelope(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        source: str | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> Event:
        """The envelope: context (correlation, causation, trace) + frozen payload + id.

        The hot paths call it directly; ``_prepare`` validates first."""
        parent = _current_event_get()
        if correlation_id is None:
            correlation_id = _correlation_get()
            if correlation_id is None and parent is not None:
                correlation_id = parent.correlation_id
        if causation_id is None and parent is not None:
            causation_id = parent.event_id
        tracer = self.tracer
        if tracer is not None and not tracer.adds_nothing():  # else: the untraced envelope
            return self._traced_event(
                event_type, freeze_payload(payload), new_event_id(), source, correlation_id, causation_id
            )
        if _build_event is not None:  # the same steps in C
            return _build_event(event_type, payload, source, correlation_id, causation_id)  # type: ignore[no-any-return]
        now = _time()
        event_id = event_id_at(now)  # one clock read for the id and the timestamp
        return _make_event(
            event_type,
            freeze_payload(payload),
            now,
            event_id,
            source,
            correlation_id if correlation_id is not None else event_id,
            causation_id,
        )

    def _submit(self, ev: Event, subs: tuple[Subscription, ...]) -> bool:
        d = self._dispatcher
        loop = d.loop
        if loop is None or loop.is_closed():
            d = self._ensure_loop()
        if self._audit is None and self._metrics is None:
            self._published += 1  # all _count_published would do, without the call
        else:
            self._count_published(ev)
        if not subs:
            return True
        if not d._bounded:
            d.submit_unbounded(ev, subs, self._snapshot())
            return True
        chain = _Chain(ev, subs, self._snapshot(), None, None)
        admitted = d.try_admit(chain)
        if admitted is None and _current_event_get() is not None:
            d.admit_forced()  # inside a handler: never wait for a slot the handler may hold
        elif admitted is None:
            if running_loop() is not None:
                from .errors import BackpressureError

                raise BackpressureError(
                    f"the bus is full (max_pending_events={self.max_pending_events}) and the "
                    "BLOCK policy cannot wait here without blocking the event loop; use "
                    "`await bus.publish(...)` (optionally wait=False) in async code",
                    d.pending,
                    self.max_pending_events or 0,
                )
            d.admit_blocking(chain)
        elif admitted is False:
            return False
        d.enqueue(chain)
        return True

    async def wait_for(
        self,
        pattern: str | type,
        where: Callable[[Event], bool] | None = None,
        timeout: float | None = None,
    ) -> Event:
        """Wait for the next event matching ``pattern`` (and ``where``); TimeoutError after ``timeout``.

        It watches through a tap (see ``add_tap``), not a subscription: it adds no
        result to anyone's ``PublishResult`` and no subscription to the stats.
        ``where`` runs in the publisher's thread; if it raises, the error is
        raised here."""
        target = event_type_of(pattern) if isinstance(pattern, type) else pattern
        if target is None:
            raise ValidationError(f"{pattern!r} is not an event pattern or typed-event class")
        try:
            matches = compile_pattern(target)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if self._closed:
            raise BusClosedError(f"bus {self.name!r} is closed; create a new EventBus")
        loop = asyncio.get_running_loop()
        found: asyncio.Future[Event] = loop.create_future()
        caller = threading.get_ident()

        def settle(event: Event | None, error: BaseException | None) -> None:
            if found.done():
                return
            if error is not None:
                found.set_exception(error)
            else:
                found.set_result(event)  # type: ignore[arg-type]

        def tap(event: Event) -> None:
            if found.done() or not matches(event.event_type):
                return
            error: BaseException | None = None
            try:
                if where is not None and not where(event):
                    return
            except Exception as exc:
                error = exc
            if threading.get_ident() == caller:
                settle(event, error)
            else:
                try:
                    loop.call_soon_threadsafe(settle, event, error)
                except RuntimeError:  # the waiting loop is closed: nobody to wake
                    pass

        self.add_tap(tap)
        try:
            return await asyncio.wait_for(found, timeout)
        finally:
            self.remove_tap(tap)

    # ================================================================= taps
    def add_tap(self, tap: Tap) -> None:
        """Call ``tap(event)`` for every event published on this bus from now on.

        The hook behind ``wait_for`` and ``testing.EventRecorder``: a tap observes,
        it is not a subscription (it is not in ``get_subscriptions()``, the stats or
        any ``PublishResult``). It runs synchronously in the publisher's thread and
        context, in publish order, once the event is built and validated (and
        committed, with a store) and before it is queued, so it also sees events
        that no handler matches or that backpressure then drops, and the
        ``system.handler_error`` reports. Keep it short and thread-safe; an
        exception it raises is logged, never passed to the publisher or dispatch.
        While any tap is installed, publishing takes the full (slower) path; with
        none, the hot paths do not look at taps at all."""
        if not callable(tap):
            raise TypeError(f"tap must be callable, got {type(tap).__qualname__}")
        with self._stats_lock:
            self._taps = (*self._taps, tap)
            self._slow_publish = True

    def remove_tap(self, tap: Tap) -> bool:
        """Remove a tap added with ``add_tap`` (compared with ==); True if it was there."""
        with self._stats_lock:
            taps = list(self._taps)
            if tap not in taps:
                return False
            taps.remove(tap)
            self._taps = tuple(taps)
            self._slow_publish = self._needs_full_path()
            return True

    def _needs_full_path(self) -> bool:
        """Must every publish go through ``_prepare`` (validator, audit log, store,
        taps, or closing)? Set it under ``_stats_lock`` once the bus exists."""
        return (
            self._closing
            or bool(self._taps)
            or any(x is not None for x in (self.validator, self._audit, self.store))
        )

    def _tap(self, event: Event) -> None:
        """Show ``event`` to every tap; a failing tap is logged and skipped."""
        for tap in self._taps:
            try:
                tap(event)
            except Exception:
                logger.exception(
                    "tap %r failed for %s %s", tap, event.event_type, event.event_id
                )

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no accepted event is unfinished; False if ``timeout`` passed first."""
        d = self._dispatcher
        if d.pending == 0:
            return True
        loop = asyncio.get_running_loop()
        idle: asyncio.Future[None] = loop.create_future()
        caller = threading.get_ident()

        def wake() -> None:
            if threading.get_ident() == caller:
                _resolve(idle)
            else:
                try:
                    loop.call_soon_threadsafe(_resolve, idle)
                except RuntimeError:  # the waiting loop is closed: nobody to wake
                    pass

        if not d.add_idle_waiter(wake):
            return True
        try:
            await asyncio.wait_for(idle, timeout)
        except TimeoutError:
            return False
        finally:
            d.remove_idle_waiter(wake)
        return True

    async def close(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting events, drain for up to ``timeout`` seconds, cancel what is
        still running, and release threads. Returns True if everything finished."""
        if self._closed:
            return True
        self._mark_closing()
        drained = await self.drain(timeout)
        d = self._dispatcher
        loop = d.loop
        if loop is not None and not loop.is_closed():
            if d.on_loop_thread():
                await self._stop_engine()
            else:
                fut = asyncio.run_coroutine_threadsafe(self._stop_engine(), loop)
                await asyncio.wrap_future(fut)
        runtime = self._runtime
        if runtime is not None:
            await asyncio.to_thread(runtime.stop, 5.0)
        if self.store is not None:
            await self.store.aclose()  # commits the acks still queued
        self._finish_close(drained)
        return drained

    def _mark_closing(self) -> None:
        """Refuse new events from now on (every publish path goes through _prepare,
        which raises BusClosedError)."""
        with self._stats_lock:  # against a remove_tap recomputing the flag meanwhile
            self._closing = self._slow_publish = True

    def _finish_close(self, drained: bool) -> None:
        if not drained:
            logger.warning(
                "bus %s closed with %d event(s) unfinished (timeout reached)",
                self.name,
                self._dispatcher.pending,
            )
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._audit is not None:
            self._audit.close()
        if self.store is not None:
            self.store.close()  # idempotent; commits the acks still queued
        self._closed = True

    # ============================================================ durability
    def _require_store(self, api: str) -> SQLiteStore:
        if self.store is None:
            raise ConfigurationError(
                f"bus.{api}() needs a store: create the bus with "
                "EventBus(store='sqlite:///path/events.db')"
            )
        return self.store

    async def recover(self) -> int:
        """Redeliver every unacknowledged delivery of the durable subscriptions
        subscribed now (in publish order, each to its own subscription only); returns
        how many were redelivered once they have all been handled.

        The bus already does this on start (``recover_on_start``): the first call
        counts a name's redeliveries on start and waits for them instead of queueing
        them again. Deliveries of names not subscribed stay
        pending. Inside the handler ``delivery_attempt()`` tells the attempt number
        (>= 2 for an event whose earlier attempt failed or was cut short by a crash).
        """
        return await _recovery.recover(self, self._require_store("recover"))

    def recover_sync(self, timeout: float | None = None) -> int:
        """``recover()`` for sync code (not on a thread running an event loop)."""
        if running_loop() is not None:
            raise EventBusError(
                "recover_sync() was called on a thread running an event loop, where waiting "
                "would block the loop; use `await bus.recover()`"
            )
        self._require_store("recover_sync")
        loop = self._ensure_loop().loop
        assert loop is not None
        if not loop.is_running():  # the application's loop, idle now
            return loop.run_until_complete(self.recover())
        return asyncio.run_coroutine_threadsafe(self.recover(), loop).result(timeout)

    async def replay(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Sequence[str] | None = None,
        correlation_id: str | None = None,
        *,
        to: Subscription | Callable[..., Any],
    ) -> int:
        """Deliver stored events (publish order, filtered as in ``stored_events``) to one
        handler or subscription, one at a time; returns how many were delivered.

        A ``Subscription`` gets only the events its own patterns match (and ``types``,
        when given, too), whether or not it is active.

        Inside the handler ``is_replay()`` is True. Replays are not tracked (no
        attempt, no ack) and a handler failure is logged, not dead-lettered.
        """
        return await _recovery.replay(
            self, self._require_store("replay"), since, until, types, correlation_id, to
        )

    def stored_events(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Sequence[str] | None = None,
        correlation_id: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[Event]:
        """Stored events in publish order (``async for``): ``since``/``until`` Unix times
        (inclusive), ``types`` names or patterns, ``correlation_id``."""
        store = self._require_store("stored_events")
        return store.aiter_events(since, until, types, correlation_id, batch_size)

    async def __aenter__(self) -> EventBus:
        self._ensure_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ============================================================= sync API
    def emit(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        source: str | None = None,
        correlation_id: str | None = None,
        wait_for_handlers: bool = False,
    ) -> str:
        """Publish from sync code (1.x). Returns the event id, or "" if dropped.

        ``wait_for_handlers=True`` runs every matching handler to completion, in
        priority order, before returning (sync handlers in the calling thread);
        it is not subject to backpressure and cannot be used on a thread that runs
        an event loop (use ``await bus.publish`` there).
        """
        if type(event_type) is not str or not event_type:
            raise ValidationError("event_type must be a non-empty string")
        if type(payload) is not dict and not isinstance(payload, Mapping):
            raise ValidationError("payload must be a dict", event_type)
        if wait_for_handlers and _running_loop() is not None:
            raise EventBusError(
                "emit(..., wait_for_handlers=True) was called on a thread running an event "
                "loop, where waiting would block the loop; use `await bus.publish(...)`"
            )
        if self._quick(event_type, payload):
            ev = self._envelope(event_type, payload, source, correlation_id, None)
            subs = self._registry.cache.get(event_type) or self._registry.match(event_type)
        else:
            ev, subs = self._prepare(event_type, payload, source, correlation_id, None)
            if self.store is not None:
                self._append_sync(ev, subs, "emit")
            if self._taps:
                self._tap(ev)
        if wait_for_handlers:
            self._count_published(ev)
            self.run_inline(ev, subs, collect=False)
            return ev.event_id
        return ev.event_id if self._submit(ev, subs) else _DROPPED_ID

    def run_inline(
        self,
        event: Event,
        subs: tuple[Subscription, ...],
        *,
        report: bool = True,
        collect: bool = True,
    ) -> list[HandlerResult]:
        """Run ``subs`` for ``event`` now, from a thread without a running loop.

        Sync handlers run in this thread; async ones on the bus loop while this
        thread waits. If any of the subscriptions still has queued work, the event
        goes through the lanes instead (keeping their order) and this call waits.
        """
        d = self._dispatcher
        results: list[HandlerResult] = []
        if not subs:
            return results
        ctx = copy_context()
        nested = _current_event_get() is not None  # from a handler: run now, never queue
        if not nested and d.loop is not None and not d.lanes_idle(subs):
            finished = threading.Event()
            chain = _Chain(event, subs, ctx, lambda _c: finished.set(), results)
            d.admit_forced()
            d.enqueue(chain)
            finished.wait()
            return results
        sink = results if collect else None
        plain = d.span is None and d.observer is None
        for sub in subs:
            handler = sub._strong or sub.handler
            if handler is None or not sub._active:
                continue
            if sub.is_async:
                loop = self._ensure_loop().loop
                assert loop is not None
                outcome = asyncio.run_coroutine_threadsafe(
                    d.call_async(sub, handler, event, ctx), loop
                ).result()
            elif plain and report and not collect and sub.schema is None and not sub.retries:
                # 1.x emit(wait_for_handlers=True) hot path: call, time, report failures only
                start = _perf()
                _, error = d.call_plain(handler, event, ctx if len(subs) == 1 else ctx.copy())
                duration = _perf() - start
                if error is not None:
                    d.settle(sub, event, None, (None, error, False, duration, 1))
                    continue
                timeout = d.timeout_of(sub)
                if timeout is not None and duration > timeout:
                    d.settle(sub, event, None, d.overtime(sub, event, duration, timeout))
                continue
            else:
                outcome = d.call_sync(sub, handler, event, ctx, measure_timeout=True)
            if report:
                d.settle(sub, event, sink, outcome)
            else:
                value, error, timed_out, duration, attempts = outcome
                results.append(
                    _handler_result(
                        sub.subscription_id, sub.handler_name, value, error, timed_out, duration, attempts
                    )
                )
        return results

    def retry_delivery(
        self,
        event: Event,
        *,
        subscription_id: str | None = None,
        handler_name: str | None = None,
        subscription_name: str | None = None,
        patterns: Iterable[str] | None = None,
    ) -> bool:
        """Run only the subscription that failed ``event`` again (used by the DLQ).

        The subscription is the live one with ``subscription_id``, else the one with
        ``subscription_name``, else the one with ``handler_name``, among those that
        match the event's type (``patterns``, the failed one's, tell several apart);
        when none or several remain nothing runs and it returns False (a warning
        says why). True if the handler succeeded. The failure, if any, is
        logged but not re-reported (no new DLQ entry, no ``system.handler_error``).
        It waits for the handler: on a thread running an event loop it raises
        EventBusError; use ``await bus.aretry_delivery(...)`` there.
        """
        if running_loop() is not None:
            raise EventBusError(
                "retry_delivery() was called on a thread running an event loop, where "
                "waiting for the handler would block the loop (and never finish on the bus's "
                "own loop); use `await bus.aretry_delivery(...)` (`await dlq.aretry(...)`)"
            )
        target = _target(subscription_id, handler_name, subscription_name, patterns)
        return self._retry_now(event, target)

    async def aretry_delivery(
        self,
        event: Event,
        *,
        subscription_id: str | None = None,
        handler_name: str | None = None,
        subscription_name: str | None = None,
        patterns: Iterable[str] | None = None,
    ) -> bool:
        """``retry_delivery`` for async code, on any event loop (the bus's own included).

        The same lookup and run, in a worker thread that waits for the handler while
        this task awaits it (async handlers still run on the bus loop)."""
        target = _target(subscription_id, handler_name, subscription_name, patterns)
        self._ensure_loop()  # an unbound bus binds to this loop, not to a thread of its own
        return await asyncio.to_thread(self._retry_now, event, target)

    def _retry_now(self, event: Event, target: RetryTarget) -> bool:
        """The retry itself, on a thread without a running loop."""
        subs = target.find(self._registry, event)
        if not subs:
            return False
        keys = [(event.event_id, sub.subscription_id) for sub in subs]
        retrying = self._retrying
        with self._stats_lock:  # a failure of the retry is its caller's to report
            for key in keys:
                retrying[key] = retrying.get(key, 0) + 1
        try:
            results = self.run_inline(event, subs, report=False)
        finally:
            with self._stats_lock:
                for key in keys:
                    left = retrying.pop(key, 1) - 1
                    if left:
                        retrying[key] = left
        for result in results:
            if result.error is not None:
                logger.warning(
                    "retry of %s for %s %s failed again: %s",
                    result.handler_name,
                    event.event_type,
                    event.event_id,
                    type(result.error).__name__,
                )
        return bool(results) and all(r.error is None for r in results)

    def get_pending_count(self) -> int:
        """Accepted events whose handlers have not all finished."""
        return self._dispatcher.pending

    async def wait_for_pending(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` seconds for the pending events to finish (1.x).

        Returns, as 1.x did, how many of the events pending when it was called
        finished during the wait (0 when nothing was pending); ``get_pending_count()``
        tells how many remain, ``await bus.drain(timeout)`` whether all finished."""
        d = self._dispatcher
        pending, finished = d.pending, d.finished
        if pending == 0:
            return 0
        await self.drain(timeout)
        return max(0, min(pending, d.finished - finished))

    def shutdown(self, timeout: float = 30.0) -> None:
        """Drain for up to ``timeout`` seconds, then stop (sync 1.x API).

        From a thread running an event loop it cannot wait: it schedules
        ``close(timeout)`` on that loop and returns (use ``await bus.close()`` there).
        """
        if self._closed:
            return
        d = self._dispatcher
        loop = d.loop
        if loop is None or loop.is_closed():
            self._mark_closing()
            self._finish_close(True)
            return
        here = running_loop()
        if here is not None:
            here.create_task(self.close(timeout))
            return
        self._mark_closing()
        if not loop.is_running():  # the application's loop, idle now: run the drain on it
            drained = loop.run_until_complete(self._drain_and_stop(timeout))
            self._finish_close(drained)
            return
        deadline = time.monotonic() + timeout
        drained_f = asyncio.run_coroutine_threadsafe(self._drain_and_stop(timeout), loop)
        try:
            drained = drained_f.result(timeout + 5.0)
        except Exception:
            drained = False
        if self._runtime is not None:
            self._runtime.stop(max(0.5, deadline - time.monotonic() + 1.0))
        self._finish_close(drained)

    async def _drain_and_stop(self, timeout: float) -> bool:
        drained = await self.drain(timeout)
        await self._stop_engine()
        return drained

    async def _stop_engine(self) -> None:
        """On the bus loop: cancel lane workers, then release everyone still waiting."""
        d = self._dispatcher
        await d.stop_lanes()
        lost = d.abandon("close/shutdown timeout reached")
        if lost:
            logger.warning(
                "bus %s closed before %d queued event(s) were handled", self.name, lost
            )

    def __enter__(self) -> EventBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # ============================================================== failures
    def _on_handler_failure(
        self,
        sub: Subscription,
        event: Event,
        error: BaseException,
        timed_out: bool,
        attempts: int,
        duration: float,
    ) -> None:
        if self._retrying and (event.event_id, sub.subscription_id) in self._retrying:
            return  # a DLQ retry that went through the lanes: retry_delivery reports it
        with self._stats_lock:
            self._failures += 1
            if timed_out:
                self._timeouts += 1
        logger.error(
            "handler %s %s for %s %s after %d attempt(s): %s: %s",
            sub.handler_name,
            "timed out" if timed_out else "failed",
            event.event_type,
            event.event_id,
            attempts,
            type(error).__name__,
            error,
            exc_info=None if timed_out else error,
            extra={
                "event_id": event.event_id,
                "event_type": event.event_type,
                "correlation_id": event.correlation_id,
                "handler_name": sub.handler_name,
            },
        )
        if self.dead_letter_queue is not None:
            self._dead_letter(sub, event, error, timed_out)
        if event.event_type == HANDLER_ERROR_EVENT:
            return  # never report a failure of a failure handler as a new event
        self._publish_handler_error(sub, event, error, timed_out, attempts)

    def _dead_letter(
        self, sub: Subscription, event: Event, error: BaseException, timed_out: bool
    ) -> None:
        from .dlq import FailureReason

        dlq = self.dead_letter_queue
        reason = FailureReason.HANDLER_TIMEOUT if timed_out else FailureReason.HANDLER_ERROR
        text = f"{type(error).__name__}: {error}"
        try:
            dlq.add(
                event,
                reason,
                text,
                handler_name=sub.handler_name,
                metadata={
                    "subscription_id": sub.subscription_id,
                    "subscription_name": sub.name,
                    "subscription_patterns": sorted(sub.event_types),
                },
            )
        except Exception:
            logger.exception("could not add the failed event %s to the DLQ", event.event_id)
            return  # a durable delivery stays pending: recover() redelivers it
        name = self._durable.get(sub.subscription_id)
        if name is not None and _keeps_entries(dlq):
            self._mark_dead(event, name, text)
        if self._metrics is not None:
            self._metrics.update_dlq_size(dlq.size())

    def _mark_dead(self, event: Event, name: str, error: str) -> None:
        """The DLQ holds this durable delivery now: take it out of pending (queued after
        the DLQ entry, never waited for), so recover() does not deliver it again."""
        assert self.store is not None
        try:
            self.store.dead_nowait(event.event_id, name, self._redactor.redact_string(error))
        except Exception:
            logger.exception(
                "could not mark the delivery of %s to %s dead; it stays pending",
                event.event_id,
                name,
            )

    def _publish_handler_error(
        self,
        sub: Subscription,
        event: Event,
        error: BaseException,
        timed_out: bool,
        attempts: int,
    ) -> None:
        subs = self._registry.match(HANDLER_ERROR_EVENT)
        payload = {
            "original_event_id": event.event_id,
            "original_event_type": event.event_type,
            "subscription_id": sub.subscription_id,
            "handler_name": sub.handler_name,
            "error": self._redactor.redact_string(str(error)),  # messages often carry PII
            "error_type": type(error).__name__,
            "timed_out": timed_out,
            "attempts": attempts,
        }
        report = _make_event(
            HANDLER_ERROR_EVENT,
            freeze_payload(payload),
            _time(),
            new_event_id(),
            "event_bus",
            event.correlation_id,
            event.event_id,
            event.traceparent,
            event.tracestate,
        )
        self._count_published(report)
        if self._taps:
            self._tap(report)
        if not subs:
            return
        if self._closed:
            return
        d = self._ensure_loop()
        d.admit_forced()
        d.enqueue(_Chain(report, subs, self._snapshot(), None, None))

    def _on_publisher_cancelled(self, sub: Subscription, event: Event) -> None:
        logger.warning(
            "publisher of %s %s was cancelled while handler %s ran it directly; the handler "
            "was cancelled with it and the remaining handlers run from the queue",
            event.event_type,
            event.event_id,
            sub.handler_name,
            extra={"event_id": event.event_id, "correlation_id": event.correlation_id},
        )

    def _on_drop(self, event: Event, reason: str) -> None:
        with self._stats_lock:
            self._dropped += 1
        if self._metrics is not None:
            self._metrics.record_event_dropped(event.event_type, reason=reason)
        if logger.isEnabledFor(logging.WARNING):
            logger.warning("dropped %s %s: %s", event.event_type, event.event_id, reason)

    def _wire_metrics(self) -> None:
        """Feed the collector unless its backend is switched off entirely (an
        ``OTelMetrics`` on a no-op meter provider): then metrics cost nothing per event
        and the collector's snapshot stays empty."""
        metrics = self.metrics
        live = metrics if metrics is not None and not metrics.backend.records_nothing else None
        self._metrics = live
        self._dispatcher.observer = MetricsObserver(live) if live is not None else None

    def _count_published(self, event: Event) -> None:
        """Bookkeeping for a published event: counter, audit line, metrics."""
        self._published += 1  # approximate under threads; exact figures come from metrics
        if self._audit is not None:
            self._audit.log(event)
        metrics = self._metrics
        if metrics is not None:
            metrics.record_event_emitted(event.event_type, source=event.source)
            metrics.update_pending_count(self._dispatcher.pending)

    # ================================================================ stats
    def get_stats(self) -> dict[str, Any]:
        """1.x statistics keys plus live figures of the engine."""
        subs = self._registry.all()
        d = self._dispatcher
        audit_stats = self._audit.audit.get_stats() if self._audit is not None else {}
        stats: dict[str, Any] = {
            "active_subscriptions": sum(1 for s in subs if s.active),
            "total_subscriptions": len(subs),
            "audit_enabled": self._audit is not None,
            "max_concurrent_handlers": self.max_concurrent_handlers,
            "validation_enabled": self.validate_events,
            "metrics_enabled": self.metrics is not None,
            "dlq_enabled": self.dead_letter_queue is not None,
            "event_types_subscribed": self._registry.event_types(),
            "pending_async_tasks": d.pending,
            "pending_events": d.pending,
            "max_pending_events": self.max_pending_events,
            "overflow_policy": self.overflow_policy.value if self.max_pending_events else None,
            "total_events_logged": audit_stats.get("total_events_logged", 0),
            "log_file_size": audit_stats.get("log_file_size", 0),
            "events_published": self._published,
            "events_accepted": d.accepted,
            "events_dropped": self._dropped,
            "handler_failures": self._failures,
            "handler_timeouts": self._timeouts,
            "queue_depth": d.queue_depth(),
            "parallel_handlers": self.parallel_handlers,
            "tracing_enabled": self.tracer is not None,
            "closed": self._closed,
        }
        if self.metrics is not None:
            self.metrics.update_pending_count(d.pending)
            self.metrics.update_queue_depth(stats["queue_depth"])
            self.metrics.update_subscription_count(stats["active_subscriptions"])
            stats["metrics"] = self.metrics.get_snapshot()
        if self.dead_letter_queue is not None:
            stats["dlq"] = self.dead_letter_queue.get_stats()
        if self._audit is not None:
            stats["audit"] = audit_stats
        if self.store is not None:
            stats["store"] = dataclasses.asdict(self.store.stats())
        return stats

    def get_events(
        self, event_type: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[Event]:
        """Events from the audit log, newest first (1.x); ``[]`` without ``event_log_path``.

        Payloads come back redacted, as they were written."""
        if self._audit is None:
            return []
        self._audit.flush()
        return self._audit.audit.read_events(event_type=event_type, since=since, limit=limit)

    def clear_log(self) -> bool:
        """Delete the audit log and its rotated files (1.x); False without one."""
        if self._audit is None:
            return False
        self._audit.flush()
        return self._audit.audit.clear()

    def __repr__(self) -> str:
        return (
            f"EventBus(name={self.name!r}, subscriptions={len(self._registry)}, "
            f"pending={self._dispatcher.pending})"
        )


if speedups is not None:
    # publish_nowait's hot path in C (same steps as the Python method, which stays the
    # reference and takes every case the C code does not handle itself)
    EventBus._py_publish_nowait = EventBus.publish_nowait  # type: ignore[attr-defined]
    setattr(  # noqa: B010 (mypy refuses assigning to a method)
        EventBus,
        "publish_nowait",
        speedups.set_bus(EventBus, EventBus.publish_nowait, _running_loop, _current_event, _correlation_id),
    )
    # the attributes that hot path reads, without the generic attribute lookup
    _FAST_ATTRIBUTES: dict[type, tuple[str, ...]] = {
        EventBus: (
            "_audit",
            "_dispatcher",
            "_last_ctx",
            "_published",
            "_registry",
            "_schemas",
            "_metrics",
            "_slow_publish",
            "tracer",
        ),
        Dispatcher: ("_acc", "quick_loop"),
        SubscriptionRegistry: ("cache",),
    }
    for _fast_class, _fast_names in _FAST_ATTRIBUTES.items():
        speedups.fast_attributes(_fast_class, _fast_names)
    del _fast_class, _fast_names


def _collector(metrics: Any) -> Any:
    """``metrics=``: a MetricsCollector, a MetricsBackend (wrapped), or None."""
    if metrics is None:
        return None
    from .observability.collector import MetricsCollector
    from .observability.metrics import MetricsBackend

    if isinstance(metrics, MetricsCollector):
        return metrics
    if isinstance(metrics, MetricsBackend):
        return MetricsCollector(metrics)
    raise ConfigurationError(
        f"metrics must be a MetricsCollector or a MetricsBackend, not {type(metrics).__qualname__}; "
        "e.g. EventBus(metrics=InMemoryMetrics())"
    )


def _checked_redactor(redactor: Any) -> Any:
    """``redactor=``: None (the default ``Redactor``) or a redactor-like object."""
    if redactor is None or (
        callable(getattr(redactor, "redact", None)) and callable(getattr(redactor, "redact_string", None))
    ):
        return redactor
    raise ConfigurationError(
        f"redactor must be None (the default Redactor) or an object with redact(data) and "
        f"redact_string(text) such as Redactor(...), not {redactor!r}; to turn redaction off "
        "pass Redactor(enabled=False)"
    )


def _target(
    subscription_id: str | None,
    handler_name: str | None,
    subscription_name: str | None,
    patterns: Iterable[str] | None,
) -> RetryTarget:
    return RetryTarget(
        subscription_id,
        subscription_name,
        handler_name,
        frozenset(patterns) if patterns is not None else None,
    )


def _keeps_entries(dlq: Any) -> bool:
    """False for a DeadLetterQueue in memory only: its entries die with the process, so
    a durable delivery it holds must stay pending (recover() redelivers it)."""
    from .dlq import MemoryDLQBackend

    return not isinstance(getattr(dlq, "backend", None), MemoryDLQBackend)


def _checked_dlq(dlq: Any) -> Any:
    """``dead_letter_queue=``: None/False, True (a DLQ of the bus's own) or a DLQ-like object."""
    if dlq is None or dlq is False:
        return None
    if dlq is True or all(callable(getattr(dlq, m, None)) for m in ("add", "size", "get_stats")):
        return dlq
    raise ConfigurationError(
        f"dead_letter_queue must be None, True (a DLQ of the bus's own) or a DeadLetterQueue "
        f"(an object with add, size and get_stats), not {dlq!r}; "
        "e.g. EventBus(dead_letter_queue=DeadLetterQueue())"
    )


def _tracer(tracing: Any, redactor: LazyRedactor) -> Any:
    """``tracing=``: True (global tracer provider), an EventTracer, or None/False."""
    if tracing is None or tracing is False:
        return None
    from .observability.event_tracer import EventTracer

    if tracing is True:
        return EventTracer(redactor=redactor)
    if isinstance(tracing, EventTracer):
        if tracing.redactor is None:
            tracing.redactor = redactor
        return tracing
    raise ConfigurationError(
        f"tracing must be True, False or an EventTracer, not {type(tracing).__qualname__}"
    )


def _open_store(store: Any) -> SQLiteStore | None:
    """``store=``: None, a ``sqlite:///...`` URL or a ``SQLiteStore`` (opened if needed)."""
    if store is None:
        return None
    from .storage.sqlite import SQLiteStore

    opened: SQLiteStore
    if isinstance(store, str):
        opened = SQLiteStore.from_url(store)
    elif isinstance(store, SQLiteStore):
        opened = store
    else:
        raise ConfigurationError(
            f"store must be a SQLiteStore or a 'sqlite:///path/events.db' URL, not "
            f"{type(store).__qualname__}"
        )
    if not opened.is_open:
        opened.open()
    return opened
