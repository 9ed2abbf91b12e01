"""A chat_sdk bot on chat-state: ``Chat`` handles de-duplication, the thread's lock and
subscriptions, and keeps them in chat-state (``ChatSdkState``), so several bot
processes can share one Redis or Valkey.

The bot: mentioned ("@mybot ..."), it follows the thread and says hello; in a thread it
follows, it answers every message, and stops following on "bye".

Run it: ``uv run python examples/chat_sdk_bot.py [URL]`` (default ``memory://``; it
needs ``pip install "chat-state[chat-sdk]"``). It demonstrates itself offline: a few
deliveries go through ``DemoAdapter``, an in-process stand-in for a platform adapter,
which prints what the bot posts. The demo writes under a key prefix of its own and
removes its keys when it completes (after a failure they stay, for a look:
``chat-state clear --url URL --prefix chat-sdk-demo`` removes them).

With a real platform, only the adapter changes (``pip install "chat-sdk[slack]"``)::

    from chat_sdk.adapters.slack import create_slack_adapter  # reads SLACK_BOT_TOKEN
    # and SLACK_SIGNING_SECRET, or pass SlackAdapterConfig(bot_token=..., signing_secret=...)

    chat = Chat(ChatConfig(
        adapters={"slack": create_slack_adapter()},
        state=ChatSdkState.from_url(os.environ["REDIS_URL"]),
        user_name="mybot",
    ))
    register_handlers(chat)

    # and in the web app that receives Slack's events (FastAPI here; call
    # await chat.shutdown() when it stops, e.g. at the end of its lifespan):
    @app.post("/slack/events")
    async def slack_events(request: Request) -> Response:
        reply = await chat.webhooks["slack"](request)  # checks the signature, answers at once
        return Response(reply["body"], status_code=reply["status"], headers=reply.get("headers"))
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone
from typing import Any

from chat_sdk import (
    Author,
    Chat,
    ChatConfig,
    ChatInstance,
    Message,
    MessageMetadata,
    RawMessage,
    Thread,
    WebhookOptions,
)
from chat_sdk.testing import MockAdapter

from chat_state.integrations.chat_sdk import ChatSdkState

BOT_NAME = "mybot"
THREAD = "demo:C1:1700000000.1"


# -- the bot ----------------------------------------------------------------------


async def on_mention(thread: Thread, message: Message, context: Any = None) -> None:
    """Mentioned in a thread it does not follow: follow it, and say hello."""
    await thread.subscribe()  # chat-state's subscribe(): every bot process sees it
    await thread.set_state({"answered": 0})  # per-thread state, kept in chat-state too
    await thread.post(f"Hi {message.author.full_name}! I follow this thread now.")


async def on_subscribed_message(thread: Thread, message: Message, context: Any = None) -> None:
    """A message in a thread it follows (mentioned or not)."""
    if message.text.strip().lower() == "bye":
        await thread.unsubscribe()
        await thread.post("Bye! I no longer follow this thread.")
        return
    answered = ((await thread.get_state()) or {}).get("answered", 0) + 1
    await thread.set_state({"answered": answered})
    await thread.post(f"You said {message.text!r} (answer {answered} in this thread).")


def register_handlers(chat: Chat) -> None:
    """What the bot answers (``@chat.on_mention`` works too, on a module-level chat)."""
    chat.on_mention(on_mention)
    chat.on_subscribed_message(on_subscribed_message)


# -- OFFLINE STAND-IN for a platform adapter (Slack, Teams, Discord...) ---------------


class DemoAdapter(MockAdapter):
    """chat_sdk's test adapter, taking a delivery as a plain dict and printing what the
    bot posts instead of calling a platform's API. Not for production."""

    chat: ChatInstance

    def __init__(self) -> None:
        super().__init__("demo")
        self.user_name = BOT_NAME  # the bot's name on the platform: "@mybot" mentions it
        self.posted: list[str] = []

    async def initialize(self, chat: ChatInstance) -> None:
        self.chat = chat  # Chat.initialize() hands itself to every adapter

    async def handle_webhook(self, request: Any, options: WebhookOptions | None = None) -> Any:
        # A real adapter checks the request's signature, parses the platform's payload
        # into a Message, and hands it to chat.process_message(), which runs the
        # handlers in the background while the platform gets its 200. The demo waits
        # for them, so that its output comes in order.
        author = Author(
            user_id=request["user"],
            user_name=request["user"],
            full_name=request["user"].title(),
            is_bot=False,
            is_me=False,
        )
        message = Message(
            id=request["id"],
            thread_id=request["thread"],
            text=request["text"],
            formatted={"type": "root", "children": []},  # the parsed text (mdast): left out
            raw=request,
            author=author,
            metadata=MessageMetadata(date_sent=datetime.now(timezone.utc)),
        )
        await self.chat.handle_incoming_message(self, request["thread"], message)
        return {"body": "ok", "status": 200}

    async def post_message(self, thread_id: str, message: Any) -> RawMessage:
        self.posted.append(str(message))
        print(f"   bot: {message}")
        return RawMessage(id=f"bot-{len(self.posted)}", thread_id=thread_id, raw={})


# -- the demo -----------------------------------------------------------------------

#: (message id, author, text, what happens)
DELIVERIES = [
    ("m1", "ada", f"@{BOT_NAME} hello", "a mention"),
    ("m1", "ada", f"@{BOT_NAME} hello", "the platform retries: a duplicate"),
    ("m2", "ada", "what is chat-state?", "in a thread the bot follows"),
    ("m3", "grace", "bye", "in a thread the bot follows"),
    ("m4", "grace", "anyone there?", "no mention, in a thread it left"),
]


async def main(url: str) -> None:
    # Its own key prefix: the demo never touches a real bot's keys ("chat-sdk").
    state = ChatSdkState.from_url(url, key_prefix="chat-sdk-demo")
    adapter = DemoAdapter()
    chat = Chat(ChatConfig(adapters={"demo": adapter}, state=state, user_name=BOT_NAME))
    register_handlers(chat)
    await chat.initialize()  # connects the state, then initializes the adapters
    try:
        print(f"chat_sdk bot on {state.state!r}")
        for message_id, user, text, what in DELIVERIES:
            print(f"<- {message_id} from {user}: {text!r} ({what})")
            posted = len(adapter.posted)
            delivery = {"id": message_id, "user": user, "text": text, "thread": THREAD}
            await chat.webhooks["demo"](delivery)
            if len(adapter.posted) == posted:
                print("   (no reply)")
        print(f"following {THREAD}: {await state.is_subscribed(THREAD)}")
        await state.state.clear()  # the demo's keys only: those under its prefix
    finally:
        # Not clear() here: after a failure (the server is down...) it would fail too,
        # and hide the error that stopped the demo.
        await chat.shutdown()  # disconnects the state


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "memory://"))
