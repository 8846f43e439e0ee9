"""Hostile clients against the real gunicorn: none can crash a process, block its loop, hold a thread or its memory."""

from __future__ import annotations

import pathlib
import socket
import threading
import time

import pytest
import requests

from tests.e2e.rawhttp import EVENTS_HEADER, closed_by_server, message_json, read_answer, still_open, web_process

pytestmark = pytest.mark.e2e

HOST = b"Host: 127.0.0.1\r\n"


def read_to_eof(sock: socket.socket, timeout: float = 10) -> bytes:
    deadline, received = time.monotonic() + timeout, b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not closed in time; got {received[:200]!r}"
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if not data:
            return received
        received += data


def test_a_content_length_of_5000_digits_is_a_413_and_the_process_lives_on(database_url: str,
                                                                           tmp_path: pathlib.Path) -> None:
    with web_process(database_url, tmp_path, WEB_CONCURRENCY="1") as web:
        for _ in range(3):
            with web.connect() as sock:
                sock.sendall(b"POST /events HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"1" * 5000 + b"\r\n\r\n")
                answer = read_answer(sock)
                assert answer.status == 413 and answer.json()["error"]["code"] == "payload_too_large"
        assert requests.get(f"{web.url}/healthz", timeout=5).status_code == 200
        log = web.log.read_text()
        assert log.count("Booting worker") == 1, log[-3000:]  # never restarted


def test_closing_connections_does_not_block_the_loop(database_url: str, tmp_path: pathlib.Path) -> None:
    # Each answered "Connection: close" (and HTTP/1.0, and every 400) used to wait up to 2 s on the main
    # loop for the client to close its side: 16 such clients stalled one process for 32 s.
    with web_process(database_url, tmp_path, WEB_CONCURRENCY="1") as web:
        requests_ = [b"GET /healthz HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"] * 6
        requests_ += [b"GET /healthz HTTP/1.0\r\n\r\n"] * 5 + [b"GARBAGE\r\n\r\n"] * 5
        sockets = [web.connect() for _ in requests_]
        try:
            started = time.monotonic()
            for sock, raw in zip(sockets, requests_, strict=True):
                sock.sendall(raw)  # and keep the socket open, reading nothing more
            probe = time.monotonic()
            assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200
            assert time.monotonic() - probe < 3
            for sock in sockets:
                assert read_answer(sock).status in (200, 400)
                assert closed_by_server(sock)  # half-closed by the server at once
            assert time.monotonic() - started < 6
        finally:
            for sock in sockets:
                sock.close()


def test_a_slow_reader_of_pipelined_answers_is_cut_off(database_url: str, tmp_path: pathlib.Path) -> None:
    with web_process(database_url, tmp_path, MAILER_WEB_SEND_TIMEOUT_S="2") as web:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", web.port))
        pipelined = b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n"

        def send_all() -> None:
            sock.settimeout(60)
            try:
                sock.sendall(pipelined * 50_000)
            except OSError:
                return

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        try:
            # Reading 16 KB every 0.2 s: progress far more often than the 2 s send timeout, yet the ~12 MB
            # of answers would take minutes.
            started, cut = time.monotonic(), False
            while time.monotonic() - started < 40:
                time.sleep(0.2)
                sock.settimeout(5)
                try:
                    if not sock.recv(16384):
                        cut = True
                        break
                except ConnectionResetError:
                    cut = True
                    break
            assert cut, "the slow reader held its thread for 40 s"
            assert time.monotonic() - started < 30
            assert requests.get(f"{web.url}/healthz", timeout=5).status_code == 200
        finally:
            sock.close()
            sender.join(timeout=10)


def test_buffered_request_bytes_have_a_per_process_budget(database_url: str, tmp_path: pathlib.Path) -> None:
    # The budget is raised to one largest request (1 MB body + 64 KiB of headers): a second big body is 503.
    with web_process(database_url, tmp_path, WEB_CONCURRENCY="1", MAILER_MAX_BODY_BYTES="1000000",
                     MAILER_WEB_MAX_BUFFERED_BYTES="1", MAILER_WEB_REQUEST_TIMEOUT_S="120") as web:
        head = (b"POST /events HTTP/1.1\r\n" + HOST + b"Authorization: " + EVENTS_HEADER.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
        first, second = web.connect(), web.connect()
        try:
            first.sendall(head + b" " * 700_000)
            time.sleep(1)
            second.sendall(head + b" " * 700_000)
            answer = read_answer(second)
            assert answer.status == 503 and answer.json()["error"]["code"] == "server_busy"
            assert still_open(first)
            first.close()
            time.sleep(0.5)
            queued = requests.post(f"{web.url}/queue", data=message_json(), timeout=10, headers={
                "Authorization": f"Bearer {web.api_key}", "Content-Type": "application/json"})
            assert queued.status_code == 202
            scrape = requests.get(f"{web.url}/metrics", timeout=10).text
            assert 'mailer_web_refused_total{status="503"} 1.0' in scrape
        finally:
            first.close()
            second.close()


def test_100_continue_is_sent_once_and_never_to_http_1_0(database_url: str, tmp_path: pathlib.Path) -> None:
    body = message_json()
    with web_process(database_url, tmp_path) as web:
        for version, continues in ((b"HTTP/1.1", 1), (b"HTTP/1.0", 0)):
            with web.connect() as sock:
                sock.sendall(b"POST /queue " + version + b"\r\n" + HOST + b"Authorization: Bearer "
                             + web.api_key.encode() + b"\r\nContent-Type: application/json\r\nConnection: close"
                             + b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
                time.sleep(0.5)
                sock.sendall(body)
                received = read_to_eof(sock)
                assert received.count(b"100 Continue") == continues, received[:300]
                assert b" 202 " in received


def test_a_bad_request_line_does_not_put_its_path_in_the_log(database_url: str, tmp_path: pathlib.Path) -> None:
    with web_process(database_url, tmp_path) as web:
        for line in (b"GET /suppressions/alice.secret@example.com",
                     b"GET /suppressions/bob.secret@example.com\x01 HTTP/1.1",
                     b"GET /suppressions/carol.secret@example.com HTTP/7.1"):
            with web.connect() as sock:
                sock.sendall(line + b"\r\n" + HOST + b"\r\n")
                assert read_answer(sock).status == 400
        time.sleep(0.5)
        log = web.log.read_text()
        assert "Invalid request from ip=" in log
        assert "secret@example.com" not in log
