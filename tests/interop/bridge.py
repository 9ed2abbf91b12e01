"""Drive the real TypeScript state adapters (``bridge.mjs`` under Node.js) from Python.

:class:`TSBridge` starts ``node bridge.mjs <adapter> <url> <prefix>`` in this directory,
waits for its ``ready`` line, then sends one JSON request per line and reads the reply
with the same ``id``. Every wait is bounded; a bridge that does not exit when asked is
killed. One process can serve many tests (:meth:`TSBridge.reopen` switches the key
prefix on a fresh adapter). Requests may be pipelined (:meth:`TSBridge.submit`, then
:meth:`TSBridge.result`): the bridge runs them concurrently, as a TypeScript bot would.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from chat_state.testing import ServerUnavailable

__all__ = ["ADAPTERS", "HERE", "NodeUnavailable", "TSBridge", "TSError"]

HERE = Path(__file__).resolve().parent
#: The adapters the bridge can run: name → npm package.
ADAPTERS = {
    "ioredis": "@chat-adapter/state-ioredis",
    "redis": "@chat-adapter/state-redis",
}
_STDERR_LINES = 50
_EOF = object()


class NodeUnavailable(ServerUnavailable):
    """Node.js or the adapters' ``node_modules`` are missing (a skip locally, a failure in CI)."""


class TSError(Exception):
    """The TypeScript side raised (or the bridge broke); the message is the JS error's."""


class TSBridge:
    """One Node.js process running one TypeScript state adapter.

    ``with TSBridge("ioredis", url, prefix) as ts: ts.call("get", "k")``
    """

    def __init__(
        self,
        adapter: str,
        url: str,
        prefix: str,
        *,
        timeout: float = 10.0,
        start_timeout: float = 30.0,
    ) -> None:
        if adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {sorted(ADAPTERS)}, not {adapter!r}")
        self.adapter = adapter
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.start_timeout = start_timeout
        #: Versions the bridge reported: the adapter, its client library, chat, node.
        self.versions: dict[str, str | None] = {}
        self._process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[Any] = queue.Queue()
        self._pending: dict[int, dict[str, Any]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._threads: list[threading.Thread] = []
        self._next_id = 0
        self._write_lock = threading.Lock()
        self._exited = False
        self._broken = False  # a request timed out: replies may be out of step

    # -- lifecycle ----------------------------------------------------------------

    @staticmethod
    def find_node() -> str:
        """The ``node`` executable, or :class:`NodeUnavailable`."""
        node = shutil.which("node")
        if node is None:
            raise NodeUnavailable("no Node.js on PATH (the interop tests need node >= 20)")
        return node

    def _check_installed(self) -> None:
        manifest = HERE / "node_modules" / ADAPTERS[self.adapter] / "package.json"
        if not manifest.is_file():
            raise NodeUnavailable(
                f"{ADAPTERS[self.adapter]} is not installed: run `npm ci` in {HERE}"
            )

    def start(self) -> TSBridge:
        """Start the process and wait until its adapter is connected."""
        node = self.find_node()
        self._check_installed()
        self._process = subprocess.Popen(
            [node, "bridge.mjs", self.adapter, self.url, self.prefix],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._spawn(self._read_stdout, self._process.stdout)
        self._spawn(self._read_stderr, self._process.stderr)
        try:
            ready = self._next_message(self.start_timeout, what="the bridge to start")
            if not ready.get("ready"):
                raise TSError(f"the {self.adapter} bridge did not start: {ready.get('error')}")
        except BaseException:
            self._kill()
            raise
        self.versions = dict(ready.get("versions") or {})
        return self

    def close(self) -> None:
        """Ask the bridge to disconnect and exit; kill it if it does not."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None and not self._exited and not self._broken:
                with contextlib.suppress(TSError, TimeoutError, OSError):
                    self.call("close")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=self.timeout)
        finally:
            self._kill()

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=self.timeout)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for thread in self._threads:
            thread.join(timeout=self.timeout)
        self._process = None

    def reopen(self, prefix: str) -> None:
        """Replace the adapter with a fresh one (new client) using key prefix ``prefix``."""
        self.call("reopen", prefix)
        self.prefix = prefix

    @property
    def alive(self) -> bool:
        """Whether the process runs and has never failed to answer in time."""
        process = self._process
        return process is not None and process.poll() is None and not self._broken

    def __enter__(self) -> TSBridge:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------

    def submit(self, op: str, *args: Any) -> int:
        """Send one request without waiting; → its id (for :meth:`result`)."""
        process = self._process
        if process is None or process.stdin is None:
            raise TSError("the bridge is not running")
        self._next_id += 1
        request_id = self._next_id
        # ASCII-only JSON: lone surrogates and every other str survive the pipe.
        line = json.dumps({"id": request_id, "op": op, "args": list(args)}, allow_nan=False)
        with self._write_lock:
            try:
                process.stdin.write(line + "\n")
                process.stdin.flush()
            except OSError as exc:
                raise TSError(f"the bridge is gone: {exc}{self._stderr_tail()}") from exc
        return request_id

    def result(self, request_id: int, timeout: float | None = None) -> Any:
        """Wait (at most ``timeout`` s, default :attr:`timeout`) for a request's result."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while request_id not in self._pending:
            reply = self._next_message(deadline - time.monotonic(), what=f"request {request_id}")
            if "id" not in reply or reply["id"] is None:
                raise TSError(f"the bridge could not read a request: {reply.get('error')}")
            self._pending[reply["id"]] = reply
        reply = self._pending.pop(request_id)
        if not reply["ok"]:
            raise TSError(reply["error"])
        return reply["result"]

    def call(self, op: str, *args: Any) -> Any:
        """Run ``op(*args)`` on the TypeScript adapter; → its result (JSON), or raise TSError."""
        return self.result(self.submit(op, *args))

    # -- plumbing -----------------------------------------------------------------

    def _next_message(self, timeout: float, *, what: str) -> dict[str, Any]:
        try:
            message = self._replies.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            self._broken = True
            raise TimeoutError(
                f"the {self.adapter} bridge did not answer {what} in time{self._stderr_tail()}"
            ) from None
        if message is _EOF:
            self._exited = True
            self._replies.put(_EOF)  # every later wait fails fast too
            code = self._process.poll() if self._process is not None else None
            raise TSError(
                f"the {self.adapter} bridge exited (code {code}) before {what}{self._stderr_tail()}"
            )
        assert isinstance(message, dict)
        return message

    def _spawn(self, target: Any, stream: IO[str]) -> None:
        thread = threading.Thread(target=target, args=(stream,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_stdout(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    self._replies.put(json.loads(line))
                except ValueError:
                    self._stderr.append(f"(not JSON on stdout) {line.rstrip()}")
        except (OSError, ValueError):
            pass
        finally:
            self._replies.put(_EOF)

    def _read_stderr(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._stderr.append(line.rstrip())
        except (OSError, ValueError):
            pass

    def _stderr_tail(self) -> str:
        lines = list(self._stderr)
        return ("; its stderr ended with:\n" + "\n".join(lines)) if lines else ""

    def __repr__(self) -> str:
        state = "running" if self._process is not None else "stopped"
        return f"TSBridge({self.adapter!r}, prefix={self.prefix!r}) [{state}]"
