"""chat-state as the state of other frameworks. Each module imports its framework, so
import the one you use; ``import chat_state`` imports none of them:

- :mod:`chat_state.integrations.chat_sdk`: ``ChatSdkState``, typed as chat_sdk's
  ``StateAdapter`` (``pip install "chat-state[chat-sdk]"``).
- :mod:`chat_state.integrations.slack`: slack_sdk's installation and OAuth state
  stores, sync and async, for Bolt (``pip install "chat-state[slack]"``).
- :mod:`chat_state.integrations.aiogram`: aiogram 3's FSM storage and event
  isolation (``pip install "chat-state[aiogram]"``).
"""
