"""A stand-in for Slack's Web API on a loopback port, for Bolt's OAuth flow and its
calls with the tokens it stored: ``oauth.v2.access`` (a code, or a refresh token when
tokens rotate), ``auth.test`` and ``chat.postMessage``. It records every call."""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["Call", "SlackApi", "slack_api"]


@dataclass
class Call:
    method: str
    token: str | None
    form: dict[str, str]


@dataclass
class SlackApi:
    """What the stand-in answers and what it was asked."""

    url: str = ""
    team_id: str = "T0TEAM"
    enterprise_id: str | None = None
    is_enterprise_install: bool = False
    user_id: str = "U0INSTALLER"
    #: Tokens expire in this many seconds (token rotation), or never (None); refreshed
    #: ones in 12 hours (beyond Bolt's two hours before expiry, when it refreshes).
    expires_in: int | None = None
    refreshed_expires_in: int = 43_200
    calls: list[Call] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def answer(self, method: str, form: dict[str, str]) -> dict[str, Any]:
        n = next(self._counter)
        team = None if self.is_enterprise_install else {"id": self.team_id, "name": "Team"}
        enterprise = {"id": self.enterprise_id, "name": "Org"} if self.enterprise_id else None
        if method == "oauth.v2.access":
            rotating = {"refresh_token": f"xoxe-1-r{n}", "expires_in": self.expires_in}
            if form.get("grant_type") == "refresh_token":
                return {
                    "ok": True,
                    "access_token": f"xoxb-rotated-{n}",
                    "token_type": "bot",
                    "refresh_token": f"xoxe-1-r{n}",
                    "expires_in": self.refreshed_expires_in,
                }
            answer = {
                "ok": True,
                "app_id": "A0APP",
                "access_token": f"xoxb-bot-{n}",
                "token_type": "bot",
                "scope": "app_mentions:read,chat:write",
                "bot_user_id": "U0BOT",
                "team": team,
                "enterprise": enterprise,
                "is_enterprise_install": self.is_enterprise_install,
                "authed_user": {"id": self.user_id, "scope": "", "token_type": "user"},
            }
            return answer | rotating if self.expires_in is not None else answer
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://team.example/",
                "team_id": self.team_id,
                "user_id": "U0BOT",
                "bot_id": "B0BOT",
                "enterprise_id": self.enterprise_id,
                "is_enterprise_install": self.is_enterprise_install,
            }
        if method == "chat.postMessage":
            return {"ok": True, "channel": form.get("channel"), "ts": f"1700000000.{n:06d}"}
        return {"ok": False, "error": "unknown_method"}


def _handler(api: SlackApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            if "json" in (self.headers.get("Content-Type") or ""):
                form = {key: str(value) for key, value in json.loads(body or "{}").items()}
            else:
                form = {key: values[-1] for key, values in parse_qs(body).items()}
            authorization = self.headers.get("Authorization") or ""
            token = None
            if authorization.startswith("Bearer "):
                token = authorization.removeprefix("Bearer ")
            elif authorization.startswith("Basic "):
                token = base64.b64decode(authorization.removeprefix("Basic ")).decode()
            path, _, query = self.path.partition("?")
            form = {key: values[-1] for key, values in parse_qs(query).items()} | form
            method = path.rstrip("/").rsplit("/", 1)[-1]
            api.calls.append(Call(method, token or form.get("token"), form))
            reply = json.dumps(api.answer(method, form)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

    return Handler


@contextmanager
def slack_api(**answers: Any) -> Iterator[SlackApi]:
    """The stand-in, serving on a free loopback port until the block ends."""
    api = SlackApi(**answers)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
