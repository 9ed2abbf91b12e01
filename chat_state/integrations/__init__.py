"""chat-state as the state of other frameworks: each module imports its framework, so
import the one you use (``chat_state.integrations.chat_sdk``...)."""
