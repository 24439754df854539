"""A scripted name resolver, the one fake the SSRF tests need (issue 20 asks for it): a
name that answers differently on each lookup, as a hostile DNS server would.

``ScriptedResolver({"rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})`` answers the first
lookup of ``rebind.test`` with the first list, the next with the second, and repeats the
last answer after that; an ``OSError`` in the script is raised instead (a failed lookup).
It serves two hooks: :meth:`resolve`, the gateway's ``resolver`` (host, port -> addresses),
and :meth:`getaddrinfo`, a drop-in for ``socket.getaddrinfo`` for code that has no hook
(every lookup of the process goes through it then). Names outside the script resolve only
when they are IP literals or ``localhost``: no test query leaves this machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeAlias

Answer: TypeAlias = "list[str] | OSError"

_real_getaddrinfo = socket.getaddrinfo


class ScriptedResolver:
    """Scripted answers per name; records every lookup in :attr:`lookups`."""

    def __init__(self, script: dict[str, Sequence[Answer]]) -> None:
        self._script = {name.lower(): list(answers) for name, answers in script.items()}
        self._count: defaultdict[str, int] = defaultdict(int)
        self.lookups: list[str] = []

    def answer(self, host: str) -> list[str] | None:
        """The next scripted answer for ``host`` (None when it is not scripted)."""
        name = host.lower().rstrip(".")
        answers = self._script.get(name)
        if answers is None:
            return None
        self.lookups.append(name)
        index = min(self._count[name], len(answers) - 1)
        self._count[name] += 1
        found = answers[index]
        if isinstance(found, OSError):
            raise found
        return list(found)

    def count(self, host: str) -> int:
        """How many times ``host`` was looked up."""
        return self._count[host.lower().rstrip(".")]

    async def resolve(self, host: str, port: int) -> list[str]:
        """The gateway's resolver hook."""
        found = self.answer(host)
        if found is None:
            return [str(info[4][0]) for info in self.getaddrinfo(host, port)]
        return found

    def getaddrinfo(
        self,
        host: Any,
        port: Any,
        family: int = 0,
        type: int = 0,  # socket.getaddrinfo's own name
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        """``socket.getaddrinfo`` with the script in front of it."""
        name = host.decode() if isinstance(host, bytes) else str(host) if host else ""
        found = self.answer(name) if name else None
        if found is None:
            if name and name != "localhost" and not _is_ip(name):
                raise socket.gaierror(socket.EAI_NONAME, f"{name}: not resolved in tests")
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        number = int(port or 0)
        infos: list[tuple[Any, ...]] = []
        for text in found:
            v6 = ":" in text
            if family not in (0, socket.AF_INET6 if v6 else socket.AF_INET):
                continue
            address = (text, number, 0, 0) if v6 else (text, number)
            infos.append(
                (
                    socket.AF_INET6 if v6 else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    address,
                )
            )
        return infos


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True
