"""Adapters that plug the optional parts (redaction, audit log, metrics) into the bus.

Each adapter is created only when its feature is configured, so a plain bus pays
nothing for them. The redaction engine is imported on first use: ``import
aperion_event_bus`` stays light.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import Event
    from .observability.collector import MetricsCollector
    from .storage.audit_log import AuditLogger
    from .subscriptions import Subscription

__all__ = [
    "AuditSink",
    "LazyRedactor",
    "MetricsObserver",
    "RedactingLoggerFilter",
    "count_of",
    "library_logger",
]


class LazyRedactor:
    """Redactor-like object that builds the real ``Redactor`` on first use.

    With ``on_counts`` set (the bus sets it to the metrics collector's
    ``record_redactions``), every call reports how many values of each kind it
    replaced."""

    __slots__ = ("_lock", "_real", "on_counts")

    def __init__(self, real: Any = None) -> None:
        self._real = real
        self._lock = threading.Lock()
        self.on_counts: Callable[[Mapping[str, int]], None] | None = None

    def _get(self) -> Any:
        real = self._real
        if real is None:
            with self._lock:
                if self._real is None:
                    from .redaction import default_redactor

                    self._real = default_redactor()
                real = self._real
        return real

    def warm(self) -> None:
        """Build the real redactor now (importing the redaction engine, ~50 ms once
        per process): the bus does it when it is created, so that an event loop
        never pays it at its first handler failure or log line."""
        self._get()

    def redact_string(self, text: str) -> str:
        if self.on_counts is not None:
            result: str = self._reported(text)
            return result
        result = self._get().redact_string(text)
        return result

    def redact(self, data: Any) -> Any:
        if self.on_counts is not None:
            return self._reported(data)
        return self._get().redact(data)

    def _reported(self, data: Any) -> Any:
        real = self._get()
        report = getattr(real, "redact_with_report", None)
        if report is None:  # a user redactor without reports
            return real.redact_string(data) if isinstance(data, str) else real.redact(data)
        result, counts = report(data)
        if counts and self.on_counts is not None:
            self.on_counts(counts)
        return result


class RedactingLoggerFilter(logging.Filter):
    """Stamps every record of the library's own loggers with the event context
    (correlation id, event id and type, trace ids) and redacts it (msg, args,
    extras, exception text).

    Built lazily so importing the package does not import the redaction engine;
    costs nothing for records that are never created (level disabled)."""

    def __init__(self) -> None:
        super().__init__()
        self._inner: logging.Filter | None = None
        self._stamp: Callable[[logging.LogRecord], None] | None = None
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        inner = self._inner
        if inner is None:
            with self._lock:
                if self._inner is None:
                    from .observability.logging import _stamp
                    from .redaction import RedactingFilter

                    self._stamp = _stamp
                    self._inner = RedactingFilter()
                inner = self._inner
        assert self._stamp is not None
        self._stamp(record)  # correlation_id, event_id, event_type, trace ids (never overwritten)
        return inner.filter(record)


_FILTER = RedactingLoggerFilter()


def count_of(counter: itertools.count[int]) -> int:
    """Current value of an itertools.count without advancing it (a lock-free counter:
    ``next()`` on it is atomic, reading it this way never changes it)."""
    args: Any = counter.__reduce__()[1]
    return int(args[0])


def library_logger(name: str) -> logging.Logger:
    """A logger of the ``aperion_event_bus`` tree with the redaction filter attached."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


class AuditSink:
    """Feeds the JSONL audit log from a background thread.

    Publishing only appends to a queue; the thread writes, redacts and flushes the
    lines (typically within a millisecond). ``flush()`` waits until everything
    queued so far is written; ``close()`` flushes and stops the thread."""

    def __init__(self, audit: AuditLogger) -> None:
        self.audit = audit
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._written = 0
        self._queued = itertools.count()  # lines handed to log(), counted atomically
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="aperion-audit", daemon=True)
        self._thread.start()

    #: queued lines beyond which publishers on plain threads wait for the writer
    HIGH_WATER = 20_000

    def log(self, event: Event) -> None:
        next(self._queued)  # atomic: log() is called from several threads
        self._queue.append(event)
        if not self._wake.is_set():
            self._wake.set()
        if len(self._queue) > self.HIGH_WATER and asyncio._get_running_loop() is None:
            self.flush(None)  # the disk is slower than the publisher: slow it down, lose nothing

    def backlog(self) -> int:
        """Lines queued but not yet written."""
        return len(self._queue)

    async def throttle(self) -> None:
        """For async publishers: yield until the backlog is below the high-water mark."""
        while len(self._queue) > self.HIGH_WATER:
            await asyncio.sleep(0.001)

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait()
            self._wake.clear()
            while queue:
                event = queue.popleft()
                try:
                    self.audit.log_event(event)
                except Exception:
                    logging.getLogger("aperion_event_bus.audit").exception("audit write failed")
                with self._idle:
                    self._written += 1
                    self._idle.notify_all()
            if self._closed and not queue:
                return

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event queued so far is written; False on timeout."""
        target = count_of(self._queued)
        with self._idle:
            return self._idle.wait_for(lambda: self._written >= target, timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self.audit.close()


class MetricsObserver:
    """HandlerObserver that records handler calls, errors, timeouts and retries.

    The collector's recording methods are bound once (re-bound when
    ``collector`` is replaced): this runs once per handler call."""

    __slots__ = ("_collector", "_execution", "_failed", "_retry", "_timeout")

    def __init__(self, collector: MetricsCollector) -> None:
        self.collector = collector

    @property
    def collector(self) -> MetricsCollector:
        return self._collector

    @collector.setter
    def collector(self, collector: MetricsCollector) -> None:
        self._collector = collector
        self._execution = collector.record_handler_execution
        self._timeout = collector.record_handler_timeout
        self._failed = collector.record_event_failed
        self._retry = collector.record_handler_retry

    def handler_finished(
        self,
        sub: Subscription,
        event: Event,
        duration: float,
        error: BaseException | None,
        timed_out: bool,
        attempts: int,
    ) -> None:
        if timed_out:
            self._timeout(event.event_type, sub.handler_name, duration)
        else:
            self._execution(event.event_type, sub.handler_name, duration, error is None)
        if error is not None:
            self._failed(event.event_type)

    def handler_retry(self, sub: Subscription, event: Event, attempt: int) -> None:
        self._retry(event.event_type, sub.handler_name)
