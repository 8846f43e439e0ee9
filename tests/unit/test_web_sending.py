"""DeadlineSocket: a response must be taken within the send timeout once the client falls behind."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from mailer.web.sending import DeadlineSocket, SendState, SendTimeout, unsent_bytes


def pair() -> tuple[socket.socket, socket.socket]:
    server, client = socket.socketpair()
    for sock in (server, client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.setblocking(False)
    return server, client


def test_a_client_reading_a_little_at_a_time_is_cut_off_at_the_deadline() -> None:
    server, client = pair()
    stop = threading.Event()

    def trickle() -> None:  # some progress every 0.1 s: SO_SNDTIMEO would never fire
        while not stop.wait(0.1):
            try:
                client.recv(512)
            except OSError:
                return

    reader = threading.Thread(target=trickle, daemon=True)
    reader.start()
    try:
        started = time.monotonic()
        with pytest.raises(SendTimeout):
            DeadlineSocket(server, SendState(), 1.0).sendall(b"x" * 4_000_000)
        assert 0.9 <= time.monotonic() - started < 5
    finally:
        stop.set()
        reader.join(timeout=5)
        server.close()
        client.close()


def test_the_deadline_spans_responses_until_the_client_has_taken_everything() -> None:
    server, client = pair()
    try:
        state = SendState()
        sock = DeadlineSocket(server, state, 0.5)
        with pytest.raises(SendTimeout):
            sock.sendall(b"x" * 1_000_000)
        stalled = state.stalled_since
        assert stalled is not None
        state.reset_if_drained(server)
        assert state.stalled_since == stalled  # still unread: the next response has no fresh deadline
        client.setblocking(False)
        while True:
            try:
                client.recv(65536)
            except BlockingIOError:
                break
        time.sleep(0.05)
        state.reset_if_drained(server)
        assert unsent_bytes(server) == 0 and state.stalled_since is None
    finally:
        server.close()
        client.close()


def test_a_client_that_keeps_up_gets_everything() -> None:
    server, client = pair()
    received = bytearray()

    def read_all() -> None:
        while len(received) < 300_000:
            received.extend(client.recv(65536))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    try:
        DeadlineSocket(server, SendState(), 5.0).sendall(b"y" * 300_000)
        reader.join(timeout=10)
        assert bytes(received) == b"y" * 300_000
    finally:
        server.close()
        client.close()
