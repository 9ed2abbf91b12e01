"""A Slack Bolt app distributed to many workspaces, whose installations (the tokens of
each workspace) and OAuth states live in chat-state, so every instance of the app
shares them: install it through one instance, and any other answers its events.

Run it (default ``memory://``; give a ``redis://`` URL to share it between instances)::

    SLACK_SIGNING_SECRET=... SLACK_CLIENT_ID=... SLACK_CLIENT_SECRET=... \\
        uv run python examples/slack_bolt_app.py [URL] [--port 3000]

then open http://127.0.0.1:3000/slack/install to add it to a workspace (the app's
redirect URL is ``/slack/oauth_redirect``, its event request URL ``/slack/events``).
Without the ``SLACK_*`` variables it starts with placeholders: the install page works,
Slack refuses the rest. ``SLACK_API_URL`` points it at another Web API (a proxy, or
the tests' stand-in).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flask import Flask, Response, request
from slack_bolt import App, Say
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk import WebClient

from chat_state import State
from chat_state.integrations.slack import InstallationStore, OAuthStateStore

SCOPES = ["app_mentions:read", "chat:write"]


def create_bolt_app(
    state: State,
    *,
    signing_secret: str,
    client_id: str,
    client_secret: str,
    api_url: str = WebClient.BASE_URL,
) -> App:
    """The Bolt app, its installations and OAuth states in ``state`` (connected)."""
    # Every instance finds the tokens any instance saved...
    # (client_id keeps apps sharing a server and prefix apart)
    installations = InstallationStore(state, client_id=client_id)
    app = App(
        signing_secret=signing_secret,
        client=WebClient(base_url=api_url),
        # (given to the App too, so that it refreshes rotating tokens through the client
        # above: the authorization OAuthSettings would build uses Slack's own URL)
        installation_store=installations,
        oauth_settings=OAuthSettings(
            client_id=client_id,
            client_secret=client_secret,
            scopes=SCOPES,
            installation_store=installations,
            # ...and an OAuth state issued by one is accepted once, by whichever
            # instance Slack's redirect reaches.
            state_store=OAuthStateStore(state, expiration_seconds=600, client_id=client_id),
        ),
    )
    # app_uninstalled and tokens_revoked delete the workspace's data from the store.
    app.enable_token_revocation_listeners()

    @app.event("app_mention")
    def greet(event: dict[str, Any], say: Say) -> None:
        say(f"Hi <@{event['user']}>!", thread_ts=event.get("thread_ts") or event["ts"])

    return app


def create_web_app(bolt: App) -> Flask:
    """The Flask app serving Bolt's three endpoints."""
    web = Flask(__name__)
    handler = SlackRequestHandler(bolt)

    @web.route("/slack/events", methods=["POST"])
    def events() -> Response:
        return handler.handle(request)

    @web.route("/slack/install", methods=["GET"])
    def install() -> Response:
        return handler.handle(request)

    @web.route("/slack/oauth_redirect", methods=["GET"])
    def oauth_redirect() -> Response:
        return handler.handle(request)

    return web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default="memory://", help="chat-state URL")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    settings = {
        name: os.environ.get(f"SLACK_{name.upper()}", "")
        for name in ("signing_secret", "client_id", "client_secret")
    }
    if not all(settings.values()):
        print("SLACK_SIGNING_SECRET, SLACK_CLIENT_ID or SLACK_CLIENT_SECRET is not set:")
        print("starting with placeholders (the install page works, Slack refuses the rest)")
        settings = {name: value or "placeholder" for name, value in settings.items()}
    with State.from_url(args.url, key_prefix="slack-bolt-example") as state:
        bolt = create_bolt_app(
            state, api_url=os.environ.get("SLACK_API_URL", WebClient.BASE_URL), **settings
        )
        print(f"install it: http://127.0.0.1:{args.port}/slack/install", flush=True)
        create_web_app(bolt).run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
