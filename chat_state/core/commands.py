"""What a command is, as the operations build it and every backend sends it."""

from __future__ import annotations

__all__ = ["SCAN_COUNT", "Arg", "Args", "reply_text", "script_call", "set_options"]

#: One word of a command: text, or an integer (sent as its decimal text).
Arg = str | int
#: One command: its name, then its arguments.
Args = tuple[Arg, ...]
#: Keys (or set members) one SCAN (or SSCAN) step asks for.
SCAN_COUNT = 1000


def reply_text(value: object) -> str:
    """A field of a reply as text (an application's client may not decode them)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def set_options(args: Args) -> tuple[int | None, bool]:
    """``SET key value [PX ms] [NX]``: → (the TTL in ms or ``None``, whether NX).

    Raises ``ValueError`` for any other option (a backend answers as a server would,
    ``ERR syntax error``): one it did not know would change what the SET does.
    """
    px, nx, options = None, False, list(args[3:])
    while options:
        word = str(options.pop(0)).upper()
        if word == "PX" and options:
            px = int(options.pop(0))
        elif word == "NX":
            nx = True
        else:
            raise ValueError("ERR syntax error")
    return px, nx


def script_call(args: Args) -> tuple[str, list[str], list[Arg]]:
    """``EVALSHA sha numkeys key... arg...`` (or ``EVAL source ...``): → (the SHA or the
    source, the keys, the other arguments)."""
    count = int(args[2])
    return str(args[1]), [str(key) for key in args[3 : 3 + count]], list(args[3 + count :])
