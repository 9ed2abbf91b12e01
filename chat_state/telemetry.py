"""OpenTelemetry traces and metrics for chat-state: ``pip install "chat-state[otel]"``.

::

    from chat_state import telemetry

    telemetry.instrument()  # the global tracer and meter providers, or pass your own
    ...
    telemetry.uninstrument()

Once instrumented, every operation of every :class:`~chat_state.State` and
:class:`~chat_state.AsyncState` (any backend: memory, chat-state's own
connections, the client libraries' pooled clients, a client passed in) is one span
of kind CLIENT named ``chat_state.<operation>``, with the database semantic
conventions:

* ``db.system.name``: ``redis``, ``valkey`` or ``memory`` (as the server says at
  ``connect()``, when instrumented; else as the URL and client library suggest);
* ``db.operation.name``: the first command the operation sent (``SET``,
  ``EVALSHA``...; ``PING`` for ``connect()``, ``ping()`` and ``health()``);
* ``db.namespace``: the database number; ``server.address``, ``server.port``: the
  server the command went to, where the backend tells;
* ``chat_state.operation`` and ``chat_state.key_prefix``.

Never a value, a key beyond its prefix, a lock token, a URL or a password. A
failed operation's span has ERROR status and ``error.type`` (the exception's
class: its message may name a thread). An operation made of others
(``release_and_recheck``...) is the parent of their spans.

Metrics (meter ``chat_state``):

* ``db.client.operation.duration`` (histogram, s) by ``db.system.name``,
  ``chat_state.operation``, ``db.operation.name``, ``chat_state.outcome``
  (``ok``/``error``/``cancelled``) and ``error.type``;
* ``chat_state.lock.outcomes`` (counter) by ``chat_state.lock.outcome``:
  ``acquired``, ``contended`` (``acquire_lock`` found it held), ``renewed``,
  ``lost`` (an extend found it gone, a held lock expired unrenewed or was gone at
  release);
* ``chat_state.queue.depth`` (histogram) after each ``enqueue``;
* ``chat_state.connection.reconnects`` (by ``server.address``) and
  ``chat_state.connection.failovers`` (by ``chat_state.topology``): counters, from
  chat-state's own connections (the pooled clients reconnect on their own, unseen).

Instrumenting wraps the facades' methods, and :func:`uninstrument` puts the
originals back: an adapter that is not instrumented runs exactly as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version
from types import TracebackType
from typing import Any, TypeVar

try:
    from opentelemetry import context, metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        'chat_state.telemetry needs OpenTelemetry: pip install "chat-state[otel]"'
    ) from exc

from .backend import events
from .backend.urls import parse_redis_url
from .core.health import HELLO
from .errors import ConfigurationError
from .facades import AsyncState, State, _Facade

__all__ = ["OPERATIONS", "instrument", "is_instrumented", "uninstrument"]

F = TypeVar("F", bound=Callable[..., Any])

#: The operations that are spans, by name.
OPERATIONS = (
    "connect",
    "ping",
    "health",
    "subscribe",
    "unsubscribe",
    "is_subscribed",
    "acquire_lock",
    "release_lock",
    "extend_lock",
    "force_release_lock",
    "release_and_recheck",
    "enqueue_and_recheck",
    "get",
    "set",
    "set_if_not_exists",
    "delete",
    "append_to_list",
    "get_list",
    "enqueue",
    "dequeue",
    "queue_depth",
    # inspection (the iter_* walks are not spans: they yield while their caller works)
    "subscription_count",
    "inspect_lock",
    "peek_queue",
    "stats",
    "clear",
)
#: The facades' methods to wrap → the operation each is (``lock()`` releases with
#: ``_release_owned``).
_METHODS = {**{name: name for name in OPERATIONS}, "_release_owned": "release_lock"}
#: AsyncState's ``lock()`` acquires with ``_acquire_for_block`` (cancel-safe at any wait).
_ASYNC_METHODS = {**_METHODS, "_acquire_for_block": "acquire_lock"}
#: The first command of the operations that do not go through ``_call``.
_FIRST_COMMAND = {"connect": "PING", "ping": "PING", "health": "PING"}
#: Histogram buckets for operation durations (s): the semantic conventions' advice.
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


class _Instruments:
    """The tracer and the meter's instruments, while instrumented."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        release = version("chat-state")
        self.tracer = trace.get_tracer("chat_state", release, tracer_provider)
        meter = metrics.get_meter("chat_state", release, meter_provider)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of chat-state operations",
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )
        self.locks = meter.create_counter(
            "chat_state.lock.outcomes",
            unit="{lock}",
            description="Lock outcomes: acquired, contended, renewed, lost",
        )
        self.depth = meter.create_histogram(
            "chat_state.queue.depth",
            unit="{entry}",
            description="A thread's queue depth after an enqueue",
        )
        self.reconnects = meter.create_counter(
            "chat_state.connection.reconnects",
            unit="{reconnect}",
            description="Connections opened again after an outage",
        )
        self.failovers = meter.create_counter(
            "chat_state.connection.failovers",
            unit="{failover}",
            description="New primaries: named by the Sentinels, or in a Cluster's slot table",
        )

    def event(self, name: str, attributes: Mapping[str, str | int]) -> None:
        """A connection or lock event (:func:`chat_state.backend.events.emit`)."""
        if name == "reconnect":
            self.reconnects.add(1, dict(attributes))
        elif name == "failover":
            self.failovers.add(1, {"chat_state.topology": attributes.get("topology", "")})
        elif name == "lock_lost":
            self.locks.add(1, {"chat_state.lock.outcome": "lost"})


_current: list[_Instruments] = []  # the instruments while instrumented (one)
_originals: list[tuple[type[Any], str, Any]] = []
#: Held while the methods are swapped (instrument() calls uninstrument(): re-entrant).
_switching = threading.RLock()


def _forked() -> None:
    """A forked child's lock: another thread of the parent may have held it."""
    global _switching  # noqa: PLW0603 - the one lock, made anew in the child
    _switching = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forked)


class _Active:
    """The operation whose span the commands sent now belong to."""

    __slots__ = ("command", "span")

    def __init__(self, span: trace.Span, command: str | None) -> None:
        self.span = span
        self.command = command


_active: contextvars.ContextVar[_Active | None] = contextvars.ContextVar(
    "chat_state_operation", default=None
)


@functools.lru_cache(maxsize=64)
def _url_namespace(url: str) -> str | None:
    """The database number of a Redis-family URL (None for another scheme)."""
    try:
        return str(parse_redis_url(url).db)
    except ConfigurationError:
        return None


def _namespace(state: _Facade[Any]) -> str | None:
    """``db.namespace``: the database number in use, if known."""
    if state._url is not None:
        return None if state._system == "memory" else _url_namespace(state._url)
    client = getattr(state._backend, "client", None)
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    db = kwargs.get("db") if isinstance(kwargs, dict) else None
    return None if db is None else str(db)


def _error_type(exc: BaseException) -> str:
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _outcome(instruments: _Instruments, name: str, result: Any) -> None:
    """The metrics an operation's result tells."""
    if name == "acquire_lock":
        outcome = "contended" if result is None else "acquired"
    elif name == "extend_lock":
        outcome = "renewed" if result else "lost"
    else:
        if name == "enqueue":
            instruments.depth.record(result)
        return
    instruments.locks.add(1, {"chat_state.lock.outcome": outcome})


class _Operation:
    """One operation's span and measurements, for either facade."""

    def __init__(self, instruments: _Instruments, state: _Facade[Any], name: str) -> None:
        self.instruments, self.state, self.name = instruments, state, name
        attributes: dict[str, Any] = {
            "db.system.name": state._system,
            "chat_state.operation": name,
            "chat_state.key_prefix": state.key_prefix,
        }
        namespace = _namespace(state)
        if namespace is not None:
            attributes["db.namespace"] = namespace
        command = _FIRST_COMMAND.get(name)
        if command is not None:
            attributes["db.operation.name"] = command
        self.span = instruments.tracer.start_span(
            f"chat_state.{name}", kind=SpanKind.CLIENT, attributes=attributes
        )
        self.active = _Active(self.span, command)
        self._token = _active.set(self.active)
        self._context = context.attach(trace.set_span_in_context(self.span))
        self._started = time.perf_counter()

    def done(self, result: Any) -> Any:
        _outcome(self.instruments, self.name, result)
        return result

    def __enter__(self) -> _Operation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._started
        context.detach(self._context)  # (OpenTelemetry logs, never raises, a failure)
        # (ValueError: a coroutine closed from another context, whose own is gone)
        with contextlib.suppress(ValueError):
            _active.reset(self._token)
        measured: dict[str, str] = {
            "db.system.name": self.state._system,
            "chat_state.operation": self.name,
            "chat_state.outcome": "ok",
        }
        if self.active.command is not None:
            measured["db.operation.name"] = self.active.command
        if isinstance(exc, Exception):
            error = _error_type(exc)
            self.span.set_attribute("error.type", error)
            self.span.set_status(Status(StatusCode.ERROR, error))
            measured.update({"chat_state.outcome": "error", "error.type": error})
        elif exc is not None:  # cancelled, interrupted: not the server's failure
            measured["chat_state.outcome"] = "cancelled"
        self.span.end()
        self.instruments.duration.record(seconds, measured)


def _annotate(state: _Facade[Any], key: str | None, args: Any) -> None:
    """The first command of the current operation names its span and server."""
    active = _active.get()
    if active is None or active.command is not None:
        return
    active.command = str(args[0])
    span = active.span
    span.set_attribute("db.operation.name", active.command)
    peer = getattr(state._backend, "peer", None)
    where = peer(key) if peer is not None else None
    if where is not None:
        span.set_attribute("server.address", where[0])
        if where[1] is not None:
            span.set_attribute("server.port", where[1])


def _traced_sync(method: F, name: str) -> F:
    instruments = _current[0]

    @functools.wraps(method)
    def traced(self: State, *args: Any, **kwargs: Any) -> Any:
        with _Operation(instruments, self, name) as operation:
            result = operation.done(method(self, *args, **kwargs))
            if name == "connect":
                _identify(self)
                operation.span.set_attribute("db.system.name", self._system)
            return result

    return traced  # type: ignore[return-value]


def _traced_async(method: F, name: str) -> F:
    instruments = _current[0]

    @functools.wraps(method)
    async def traced(self: AsyncState, *args: Any, **kwargs: Any) -> Any:
        with _Operation(instruments, self, name) as operation:
            result = operation.done(await method(self, *args, **kwargs))
            if name == "connect":
                await _identify_async(self)
                operation.span.set_attribute("db.system.name", self._system)
            return result

    return traced  # type: ignore[return-value]


def _unidentified(state: _Facade[Any], exc: Exception) -> None:
    """HELLO failed: a server that has no HELLO keeps the guessed name for good; any
    other failure (a timeout, a disconnect meanwhile) leaves the connect as it was and
    the question for the next one."""
    if "unknown command" in str(exc).lower():
        state._identified = True
    else:
        state._logger.debug("chat-state could not ask the server its name: %s", exc)


def _identify(state: State) -> None:
    """Ask the server its name (HELLO) once, for ``db.system.name``."""
    if not state._identified and state._system != "memory":
        try:
            state._identify(state._call(None, HELLO))
        except Exception as exc:  # (never fails the connect that succeeded)
            _unidentified(state, exc)


async def _identify_async(state: AsyncState) -> None:
    if not state._identified and state._system != "memory":
        try:
            state._identify(await state._call(None, HELLO))
        except Exception as exc:
            _unidentified(state, exc)


def _traced_call(call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def _call(self: _Facade[Any], key: str | None, args: Any) -> Awaitable[Any] | Any:
        _annotate(self, key, args)
        return call(self, key, args)

    return _call


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return bool(_current)


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Trace and measure every chat-state operation from now on.

    Args:
        tracer_provider: Where the spans go (OpenTelemetry's global one by default).
        meter_provider: Where the metrics go (the global one by default).

    Calling it again replaces the providers. It and :func:`uninstrument` may be called
    from any thread: one at a time takes effect.
    """
    with _switching:
        uninstrument()
        instruments = _Instruments(tracer_provider, meter_provider)
        _current.append(instruments)
        for facade, wrap, methods in (
            (State, _traced_sync, _METHODS),
            (AsyncState, _traced_async, _ASYNC_METHODS),
        ):
            for method, name in methods.items():
                _replace(facade, method, wrap(facade.__dict__[method], name))
            _replace(facade, "_call", _traced_call(facade.__dict__["_call"]))
        events.add_listener(instruments.event)


def _replace(facade: type[Any], name: str, wrapped: Any) -> None:
    _originals.append((facade, name, facade.__dict__[name]))
    setattr(facade, name, wrapped)


def uninstrument() -> None:
    """Stop tracing and measuring: the facades' methods are the originals again."""
    with _switching:
        while _originals:
            facade, name, original = _originals.pop()
            setattr(facade, name, original)
        while _current:
            events.remove_listener(_current.pop().event)
