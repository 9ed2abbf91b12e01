"""A minimal blocking RESP2 client for administering the harness's servers.

Cluster and Sentinel formation, health checks and failover tests need a handful of
admin commands (``CLUSTER MEET``, ``INFO replication``, ``SENTINEL MASTER``, ``WAIT``,
``MIGRATE`` ...). This client sends each one as separate words and returns the reply
as plain Python values, with nothing in between: no pool, no retries, no reply
callbacks. It is written with the standard library only, so the harness needs no
client library and its admin traffic is independent of chat-state's own connections,
which are what the tests exercise.
"""

from __future__ import annotations

import io
import select
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Any

__all__ = ["AdminClient", "Arg", "ReplyError", "parse_info"]

Arg = str | bytes | int | float
"""One word of a command: text (sent as UTF-8), bytes, or a number (sent as its digits)."""

_MAX_LINE = 1 << 20
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # bytes that are not UTF-8 survive a round trip through str


class ReplyError(Exception):
    """The server answered a command with an error reply; the message is the reply's text.

    For example ``ReplyError("NOAUTH Authentication required.")``.
    """


def _encode(args: Sequence[Arg]) -> bytes:
    """``args`` as one RESP command (an array of bulk strings)."""
    if not args:
        raise ValueError("a command needs at least one word")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            word = arg
        elif isinstance(arg, str):
            word = arg.encode(_ENCODING, _ERRORS)
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            word = repr(arg).encode() if isinstance(arg, float) else b"%d" % arg
        else:
            raise TypeError(f"a command word must be str, bytes, int or float, not {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


def _line(stream: io.BufferedReader) -> bytes:
    """One reply line without its CRLF; a short line means the connection closed."""
    line = stream.readline(_MAX_LINE)
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the connection closed before a full reply")
    return line[:-2]


def _read(stream: io.BufferedReader, decode: bool) -> Any:
    """Read one RESP2 reply; an error reply (nested or not) is returned as a ReplyError."""
    line = _line(stream)
    kind, body = line[:1], line[1:]
    if kind == b"+":
        return body.decode(_ENCODING, _ERRORS) if decode else body
    if kind == b"-":
        return ReplyError(body.decode(_ENCODING, "replace"))
    if kind == b":":
        return int(body)
    if kind in (b"$", b"*"):
        length = int(body)
        if length < 0:
            return None
        if kind == b"*":
            return [_read(stream, decode) for _index in range(length)]
        data = stream.read(length + 2)
        if len(data) != length + 2:
            raise ConnectionError("the connection closed inside a bulk reply")
        payload = data[:-2]
        return payload.decode(_ENCODING, _ERRORS) if decode else payload
    raise ConnectionError(f"unexpected reply type {kind!r} (only RESP2 is spoken)")


class AdminClient:
    """One blocking connection to one server, for admin commands.

    Replies map to Python values: simple and bulk strings to ``str`` (or ``bytes`` with
    ``decode=False``), integers to ``int``, arrays to ``list``, nil to ``None``. An error
    reply raises :class:`ReplyError`; one nested in an array is returned in its place.
    A failed or timed-out command raises :class:`OSError` (``ConnectionError``,
    ``TimeoutError``) and closes the connection. The connection is opened on the first
    command and kept, so that commands which depend on it (``SET`` then ``WAIT``) work;
    a connection the server closed meanwhile (it was restarted) is replaced before the
    next command is sent.

    Usage::

        with AdminClient(server.port, password="s3cret") as admin:
            admin.execute_command("CONFIG", "SET", "maxmemory", "10mb")
            assert admin.info("replication")["role"] == "master"
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        password: str | None = None,
        username: str | None = None,
        timeout: float = 2.0,
        decode: bool = True,
    ) -> None:
        """Describe the connection; nothing connects before the first command.

        Args:
            port: the server's TCP port.
            host: the server's address.
            password: sent with ``AUTH`` on every new connection, if given.
            username: the ACL user for ``AUTH`` (with ``password``).
            timeout: seconds allowed for connecting and for each reply.
            decode: return text as ``str`` (bytes that are not UTF-8 as surrogate
                escapes, so a key read can be sent back as is) rather than ``bytes``.
        """
        self.host = host
        self.port = port
        self.password = password
        self.username = username
        self.timeout = timeout
        self.decode = decode
        self._sock: socket.socket | None = None
        self._stream: io.BufferedReader | None = None

    def execute_command(self, *args: Arg) -> Any:
        """Send one command (``"CLUSTER", "SETSLOT", 42, "NODE", node_id``); return the reply.

        Raises:
            ReplyError: the server answered with an error.
            OSError: the connection failed or the reply did not come within ``timeout``.
        """
        reply = self._call(args)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def info(self, section: str | None = None) -> dict[str, str]:
        """``INFO [section]`` as a dict of its ``name:value`` lines (as text)."""
        reply = self.execute_command("INFO", *([] if section is None else [section]))
        text = reply.decode(_ENCODING, "replace") if isinstance(reply, bytes) else str(reply)
        return parse_info(text)

    def close(self) -> None:
        """Close the connection, if open; the next command opens a new one."""
        stream, sock = self._stream, self._sock
        self._stream = self._sock = None
        if stream is not None:
            stream.close()
        if sock is not None:
            sock.close()

    def __enter__(self) -> AdminClient:
        """Return ``self``; the connection is closed on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection."""
        self.close()

    def __repr__(self) -> str:
        """Show the address (never the password)."""
        return f"AdminClient({self.host}:{self.port})"

    # -- internals --------------------------------------------------------------------

    def _call(self, args: Sequence[Arg]) -> Any:
        """Send ``args`` on the connection (opened if needed); return the raw reply."""
        payload = _encode(args)
        stream = self._connection()
        assert self._sock is not None
        try:
            self._sock.sendall(payload)
            return _read(stream, self.decode)
        except BaseException:  # a timeout, a failure or an interrupt: the stream is lost
            self.close()
            raise

    def _connection(self) -> io.BufferedReader:
        """The open connection's reader: the kept one, unless the server closed it."""
        if self._sock is not None and self._stream is not None:
            readable, _w, _x = select.select([self._sock], [], [], 0)
            if not readable:
                return self._stream
            self.close()  # an idle connection with something to read: the server closed it
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = sock.makefile("rb")
        except BaseException:
            sock.close()
            raise
        self._sock, self._stream = sock, stream
        if self.password is not None:
            words = [self.password] if self.username is None else [self.username, self.password]
            try:
                sock.sendall(_encode(["AUTH", *words]))
                reply = _read(stream, self.decode)
            except BaseException:
                self.close()
                raise
            if isinstance(reply, ReplyError):
                self.close()
                raise reply
        return stream


def parse_info(text: str) -> dict[str, str]:
    """Parse ``INFO`` (or ``CLUSTER INFO``) text: ``name:value`` lines, sections skipped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
    return fields
