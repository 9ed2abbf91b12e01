"""Where a server listens."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address"]


@dataclass(frozen=True)
class Address:
    """Where a server listens: ``host`` and ``port``, or a unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: str | None = None

    def __str__(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    def peer(self) -> tuple[str, int | None]:
        """``(host, port)``, or ``(path, None)`` for a unix socket."""
        return (self.path, None) if self.path is not None else (self.host, self.port)

    @classmethod
    def parse(cls, text: str) -> Address:
        """``host:port`` (as in a MOVED reply) → an address."""
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]"), int(port))
