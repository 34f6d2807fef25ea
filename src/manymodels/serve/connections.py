"""uvicorn's HTTP protocol with a header deadline, and a drain at shutdown.

Connections that do not send a whole request in time are closed.

uvicorn closes a connection idle between requests (`timeout_keep_alive`), but not one that never finishes its
headers: a client sending a byte every few seconds (or nothing at all after connecting) holds a connection, and
its memory, for ever; a few hundred of them exhaust the server. Here each request's headers must arrive whole
within `HEADER_SECONDS` of its first byte (or of the connection, for the first): else the connection is closed.
The deadline is read from `ENV` (set by `serve` for itself and the workers it starts).

With several workers, the supervisor closes the shared listening socket at shutdown, and the kernel resets every
connection it had completed that no worker had accepted yet (a worker answering on its event loop accepts late; one
still starting not at all): so it is closed only once that queue is empty (`wait_accepted`, read from the kernel
where it tells: Linux), for at most the drain's seconds. (One process accepts them itself before it stops: its loop
reads the socket before it checks whether to stop.)

At shutdown uvicorn closes every connection idle between requests at once, so a request a client sent on a
kept-alive connection a moment before was lost with a reset. Here such a connection is still read for the drain
(`DRAIN_ENV`, else `DRAIN_SECONDS`): a request that arrives is answered, with `Connection: close`; then it is closed.
A request sent on a kept-alive connection at the very moment the server closes it is lost whatever the server does
(HTTP lets either side close an idle connection): the drain makes that moment one the client had ample time to
avoid, not the moment the server began to stop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ENV = "MANYMODELS_SERVE_HEADER_TIMEOUT"
HEADER_SECONDS = 10.0
DRAIN_ENV = "MANYMODELS_SERVE_DRAIN"
# At shutdown (SIGTERM), how long a connection idle between requests is still answered: a request already on its way
# gets its answer (with `Connection: close`) rather than a reset connection. (1 s was too short: a client stalled a
# second on a loaded machine sent its next request as the connection closed, and lost it.)
DRAIN_SECONDS = 3.0


def header_seconds() -> float:
    """The deadline for a request's headers, in seconds (`ENV`, else `HEADER_SECONDS`)."""
    return _seconds(ENV, HEADER_SECONDS, least=0.1)


def drain_seconds() -> float:
    """How long, at shutdown, a connection idle between requests is still answered (`DRAIN_ENV`, else
    `DRAIN_SECONDS`)."""
    return _seconds(DRAIN_ENV, DRAIN_SECONDS, least=0.0)


def accept_queue(listening: socket.socket) -> int | None:
    """Connections the kernel completed on a listening socket that nobody has accepted yet; None where the system
    does not tell (Linux gives it as `tcpi_unacked` of a listening socket's TCP_INFO)."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        info = listening.getsockopt(socket.IPPROTO_TCP, option, 104)
    except OSError:
        return None
    return int(struct.unpack_from("I", info, 24)[0]) if len(info) >= 28 else None


def wait_accepted(sockets: Sequence[socket.socket], seconds: float) -> None:
    """Wait until every connection queued on `sockets` is accepted (by the workers still accepting), for at most
    `seconds`: closing a listening socket resets the connections still queued on it."""
    deadline = time.monotonic() + seconds
    while any(accept_queue(s) for s in sockets) and time.monotonic() < deadline:
        time.sleep(0.01)


def _seconds(variable: str, default: float, least: float) -> float:
    try:
        return max(least, float(os.environ.get(variable, default)))
    except ValueError:
        return default


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers are not whole in time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._seconds = header_seconds()
        self._drain = drain_seconds()
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed

    def shutdown(self) -> None:
        """At shutdown: a connection with a request in progress closes after its answer (as uvicorn does); one idle
        between requests is answered for the drain's seconds more, then closed."""
        if self.cycle is None or self.cycle.response_complete:
            self._draining = True
            self.loop.call_later(self._drain, self._close_idle)
        else:
            self.cycle.keep_alive = False

    def _close_idle(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self._seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle.response_complete:  # never cut an answer short
            self.transport.close()
