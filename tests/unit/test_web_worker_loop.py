"""The web worker's main loop: an unexpected exception while reading a request costs that connection only."""

from __future__ import annotations

import logging
import selectors
import socket
import types

import pytest

from mailer.web import framing, worker


def loop_worker() -> worker.BufferingWorker:
    w = worker.BufferingWorker.__new__(worker.BufferingWorker)  # the main loop's state, without a process
    w.cfg = types.SimpleNamespace(limit_request_line=4094)
    w.log = logging.getLogger("test-web-worker")
    w.poller = selectors.DefaultSelector()
    w.header_timeout, w.request_timeout, w.send_timeout = 10.0, 60.0, 30.0
    w.max_header_bytes, w.max_body_bytes = 65536, 1_000_000
    w.max_buffered, w.buffered = 10_000_000, 0
    w.reading, w.lingering = {}, {}
    w.nr_conns = 1
    return w


def test_an_exception_reading_a_request_answers_400_and_the_loop_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_feed(self: framing.RequestFramer, data: bytes) -> None:
        raise ValueError("a bug nobody foresaw")

    monkeypatch.setattr(framing.RequestFramer, "feed", broken_feed)
    w = loop_worker()
    server, client = socket.socketpair()
    try:
        conn = worker.Conn(w.cfg, server, ("127.0.0.1", 1), ("127.0.0.1", 2))
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        w._guarded(conn, w._start_request, conn, b"")  # raises nothing
        client.settimeout(5)
        answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request") and b'"malformed_request"' in answer
        assert conn in w.lingering and not w.reading and w.buffered == 0
        assert client.recv(1) == b""  # half-closed by the server
        w._end_linger(conn)
        assert w.nr_conns == 0 and not w.lingering
    finally:
        client.close()
        w.poller.close()
