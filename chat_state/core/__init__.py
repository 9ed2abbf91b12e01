"""chat-state's core: the contract's semantics, written once, without I/O.

:mod:`~chat_state.core.operations` (each operation a prepared command and how to
read its reply), :mod:`~chat_state.core.layout` (key names, shared with the
TypeScript adapters), :mod:`~chat_state.core.codec` (JSON as ``JSON.stringify``
writes it), :mod:`~chat_state.core.validate` (argument checks and ranges) and
:mod:`~chat_state.core.scripts` (the Lua scripts and their Python twins). Its
code imports no asyncio, anyio, socket, threading or hiredis, and from chat-state
only :mod:`chat_state.errors` and :mod:`chat_state.models` (``tests/test_layers.py``).
Internal: its names may change between releases.
"""
