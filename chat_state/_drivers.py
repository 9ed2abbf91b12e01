"""Run a sans-IO operation against a backend, blocking or async.

The only place that knows how a :class:`ScriptCall` reaches a server: by SHA, and
on NOSCRIPT (a restarted or failed-over node lost its script cache) once more with
the full source, which also caches the script on that node again.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .operations import Command, Operation, ScriptCall
from .protocols import AsyncRedisLike, NoScriptError, RedisLike

__all__ = ["run_async", "run_sync"]

T = TypeVar("T")


def _script_sync(backend: RedisLike, call: ScriptCall) -> Any:
    try:
        return backend.evalsha(call.script.sha, call.keys, call.args)
    except NoScriptError:
        return backend.eval(call.script.source, call.keys, call.args)


async def _script_async(backend: AsyncRedisLike, call: ScriptCall) -> Any:
    try:
        return await backend.evalsha(call.script.sha, call.keys, call.args)
    except NoScriptError:
        return await backend.eval(call.script.source, call.keys, call.args)


def run_sync(backend: RedisLike, operation: Operation[T]) -> T:
    """Drive ``operation`` to completion on a blocking backend."""
    try:
        call = next(operation)
        while True:
            if isinstance(call, Command):
                reply = getattr(backend, call.name)(*call.args)
            else:
                reply = _script_sync(backend, call)
            call = operation.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(backend: AsyncRedisLike, operation: Operation[T]) -> T:
    """Drive ``operation`` to completion on an async backend."""
    # The hot path of AsyncState: a command is awaited here directly, without a frame
    # of its own.
    try:
        call = next(operation)
        while True:
            if isinstance(call, Command):
                reply = await getattr(backend, call.name)(*call.args)
            else:
                reply = await _script_async(backend, call)
            call = operation.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
