"""Run a sans-IO operation against a backend, blocking or async.

The only place that knows how a :class:`ScriptCall` reaches a server: by SHA, and
on NOSCRIPT (a restarted or failed-over node lost its script cache) once more with
the full source, which also caches the script on that node again.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .operations import Call, Command, Operation
from .protocols import AsyncRedisLike, NoScriptError, RedisLike

__all__ = ["run_async", "run_sync"]

T = TypeVar("T")


def _call_sync(backend: RedisLike, call: Call) -> Any:
    if isinstance(call, Command):
        return getattr(backend, call.name)(*call.args)
    try:
        return backend.evalsha(call.script.sha, call.keys, call.args)
    except NoScriptError:
        return backend.eval(call.script.source, call.keys, call.args)


async def _call_async(backend: AsyncRedisLike, call: Call) -> Any:
    if isinstance(call, Command):
        return await getattr(backend, call.name)(*call.args)
    try:
        return await backend.evalsha(call.script.sha, call.keys, call.args)
    except NoScriptError:
        return await backend.eval(call.script.source, call.keys, call.args)


def run_sync(backend: RedisLike, operation: Operation[T]) -> T:
    """Drive ``operation`` to completion on a blocking backend."""
    try:
        call = next(operation)
        while True:
            call = operation.send(_call_sync(backend, call))
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(backend: AsyncRedisLike, operation: Operation[T]) -> T:
    """Drive ``operation`` to completion on an async backend."""
    try:
        call = next(operation)
        while True:
            call = operation.send(await _call_async(backend, call))
    except StopIteration as done:
        result: T = done.value
        return result
