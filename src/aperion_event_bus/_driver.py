"""Run a coroutine step by step inside a given contextvars.Context, without a Task.

The bus runs each handler in its own copy of the publisher's context. A Task
would do that but costs an allocation and a loop round trip per call; instead
the caller steps the coroutine with ``ctx.run(coro.send, ...)`` and, only when it
really suspends, forwards what it yields to the caller's own task (futures are
awaited by that task, cancellation is thrown back in). The handler therefore runs
"inside" the awaiting task: ``asyncio.current_task()``, ``asyncio.timeout()`` and
TaskGroups in the handler behave as if it had been awaited directly.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from contextvars import Context
from typing import Any

__all__ = ["drive", "finish_here"]


class _Yield:
    """Awaitable that yields one object to the enclosing task and returns what it sends."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


async def drive(ctx: Context, coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Finish ``coro`` (already stepped once, which yielded ``yielded``) inside ``ctx``."""
    run = ctx.run
    while True:
        try:
            sent = await _Yield(yielded)
        except GeneratorExit:
            run(coro.close)
            raise
        except BaseException as exc:
            try:
                yielded = run(coro.throw, exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = run(coro.send, sent)
            except StopIteration as stop:
                return stop.value


async def finish_here(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Like ``drive`` for a coroutine stepped in the caller's own context."""
    while True:
        try:
            sent = await _Yield(yielded)
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value
