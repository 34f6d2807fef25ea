"""The drain at shutdown, on a real uvicorn server with our protocol and raw sockets: a connection idle between
requests is still answered (and then closed) for the drain's seconds; after them, or with no drain, it is closed; a
connection the kernel queued while the server was busy is accepted and answered before the socket closes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from manymodels.serve.connections import DRAIN_ENV, HeaderDeadline, accept_queue, wait_accepted

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def running(
    monkeypatch: pytest.MonkeyPatch, drain: float
) -> Iterator[tuple[uvicorn.Server, int, socket.socket]]:
    monkeypatch.setenv(DRAIN_ENV, str(drain))
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=HeaderDeadline, log_level="error", lifespan="off",
                                           timeout_graceful_shutdown=60))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        yield server, port, listening
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def kept_alive(port: int) -> socket.socket:
    """A connection that has had one answer and is idle."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(REQUEST)
    assert answer(conn).startswith(b"HTTP/1.1 200")
    return conn


def answer(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"ok"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def stop_accepting(server: uvicorn.Server, port: int) -> None:
    """Begin the shutdown; return once new connections are refused (by then every connection was told to stop)."""
    server.should_exit = True
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_an_idle_connection_is_answered_during_the_drain_then_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    with running(monkeypatch, drain=60) as (server, port, _):
        with kept_alive(port) as sends, kept_alive(port) as waits:
            stop_accepting(server, port)
            sends.sendall(REQUEST)  # a request on its way as the server stops: answered, not reset
            got = answer(sends)
            assert got.startswith(b"HTTP/1.1 200") and b"connection: close" in got.lower()
            assert sends.recv(10) == b""  # then closed by the server
            waits.settimeout(0.5)
            with pytest.raises(TimeoutError):
                waits.recv(10)  # still open: the drain is not over


def test_without_a_drain_an_idle_connection_is_closed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with running(monkeypatch, drain=0) as (server, port, _):
        with kept_alive(port) as idle:
            stop_accepting(server, port)
            assert idle.recv(10) == b""  # closed by the server (the socket's timeout is 30 s)


@contextmanager
def two_queued() -> Iterator[socket.socket]:
    """A listening socket with two connections the kernel completed and nobody accepted (skipped where the system
    does not tell a listening socket's queue)."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        if accept_queue(listening) is None:
            pytest.skip("this system does not tell a listening socket's queue")
        port = listening.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port)):
            yield listening


def test_the_kernel_says_how_many_connections_wait_to_be_accepted() -> None:
    with two_queued() as listening:
        assert accept_queue(listening) == 2
        accepted, _ = listening.accept()
        with accepted:
            assert accept_queue(listening) == 1


def test_the_listening_socket_closes_once_the_queued_connections_are_accepted() -> None:
    """What the supervisor of several workers waits for before it closes the shared socket: the connections queued
    on it accepted (here by a thread, 0.3 s on), and no longer than it is given when nobody accepts."""
    with two_queued() as listening:
        taken: list[socket.socket] = []

        def worker() -> None:
            time.sleep(0.3)
            taken.extend(listening.accept()[0] for _ in range(2))

        thread = threading.Thread(target=worker)
        thread.start()
        wait_accepted([listening], seconds=60)
        assert accept_queue(listening) == 0 and len(taken) >= 1  # returned once the queue was empty, not at 60 s
        thread.join()
        for conn in taken:
            conn.close()
        with socket.create_connection(listening.getsockname()):
            started = time.monotonic()
            wait_accepted([listening], seconds=0.5)  # nobody accepts: it gives up when told
            assert time.monotonic() - started >= 0.5 and accept_queue(listening) == 1
