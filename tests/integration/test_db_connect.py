"""Every connect is bounded by MAILER_DB_CONNECT_TIMEOUT_S, and one that fails leaves no socket behind."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from mailer import db
from mailer.config import Settings

TIMEOUT_S = 2  # libpq's smallest


@contextlib.contextmanager
def silent_server() -> Iterator[socket.socket]:
    """A port whose kernel completes the TCP handshake but whose server never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server


@contextlib.contextmanager
def syn_black_hole() -> Iterator[int]:
    """A port where SYNs go unanswered, as behind a firewall that drops them: a listening socket whose accept
    queue is full (Linux then drops new SYNs)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


@contextlib.contextmanager
def no_garbage_collection() -> Iterator[None]:
    """The collector off: a socket closes only if nothing references it, not when the collector happens by."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def settings() -> Settings:
    return Settings(db_connect_timeout_s=TIMEOUT_S)


def closed_by_client(server: socket.socket) -> bool:
    """Whether the client's end of the connection the server accepts is closed (EOF within 1 s)."""
    accepted, _ = server.accept()
    with accepted:
        accepted.settimeout(1)
        try:
            while accepted.recv(1024):  # the SSL request libpq sent first
                pass
        except TimeoutError:
            return False
        return True


def test_a_connect_to_a_server_that_never_answers_gives_up_within_the_timeout() -> None:
    with silent_server() as server:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timeout"):
            db.connect(url(server.getsockname()[1]), settings())
    assert TIMEOUT_S - 0.5 < time.monotonic() - started < TIMEOUT_S + 1.5


def test_a_connect_to_a_syn_black_hole_gives_up_within_the_timeout() -> None:
    with syn_black_hole() as port:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timeout"):
            db.connect(url(port), settings())
    assert time.monotonic() - started < TIMEOUT_S + 1.5


def test_an_async_connect_to_a_syn_black_hole_gives_up_within_the_timeout() -> None:
    with syn_black_hole() as port:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timeout"):
            asyncio.run(db.connect_async(url(port), settings()))
    assert time.monotonic() - started < TIMEOUT_S + 1.5


def test_a_server_starting_up_is_an_error_at_once_not_a_wait() -> None:
    with starting_up_server() as port:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="starting up"):
            db.connect(url(port), settings())
    assert time.monotonic() - started < 1


def test_a_connect_that_times_out_closes_its_socket_at_once() -> None:
    with silent_server() as server, no_garbage_collection():
        with pytest.raises(psycopg.OperationalError):
            db.connect(url(server.getsockname()[1]), settings())
        assert closed_by_client(server)


def test_an_async_connect_that_times_out_closes_its_socket_at_once() -> None:
    with silent_server() as server, no_garbage_collection():
        with pytest.raises(psycopg.OperationalError):
            asyncio.run(db.connect_async(url(server.getsockname()[1]), settings()))
        assert closed_by_client(server)


def test_a_cancelled_async_connect_closes_its_socket_even_while_its_exception_lives_on() -> None:
    # As in Procrastinate's worker: it cancels its LISTEN connect as it stops, and the exception that ends
    # the worker's run sits in a reference cycle (the run's task <-> the worker's frame) until the garbage
    # collector runs; the cancellation's traceback holds psycopg's connecting generator and libpq's socket.
    kept: list[BaseException] = []

    async def connect(port: int) -> None:
        try:
            await db.connect_async(url(port), settings())
        except asyncio.CancelledError as exc:
            kept.append(exc)
            raise

    async def cancel_midway(port: int) -> None:
        connecting = asyncio.create_task(connect(port))
        await asyncio.sleep(0.3)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting

    with silent_server() as server, no_garbage_collection():
        asyncio.run(cancel_midway(server.getsockname()[1]))
        assert kept
        assert closed_by_client(server)


def test_a_connect_gets_the_timeout_from_the_settings(database_url: str) -> None:
    with db.connect(database_url, Settings(db_connect_timeout_s=7)) as conn:
        assert conn.info.get_parameters()["connect_timeout"] == "7"


@contextlib.contextmanager
def starting_up_server() -> Iterator[int]:
    """A port answering every connection as Postgres does while it starts: FATAL 57P03."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                with client:
                    _answer_starting_up(client)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _answer_starting_up(client: socket.socket) -> None:
    length = struct.unpack("!I", client.recv(4))[0]
    body = client.recv(length - 4)
    if body == struct.pack("!I", 80877103):  # SSLRequest: no SSL here
        client.sendall(b"N")
        length = struct.unpack("!I", client.recv(4))[0]
        client.recv(length - 4)
    fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
    client.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)
