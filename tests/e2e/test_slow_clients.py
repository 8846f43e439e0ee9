"""Slow clients against the real gunicorn: the web tier keeps answering, and they get a 408 at their deadline."""

from __future__ import annotations

import pathlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.rawhttp import (
    EVENTS_HEADER,
    Web,
    closed_by_server,
    event_json,
    message_json,
    read_answer,
    still_open,
    web_process,
)

pytestmark = pytest.mark.e2e

ANSWER_WITHIN_S = 2.0
SLOWLORIS, BODY_TRICKLE, BODY_STALLED, IDLE = 20, 10, 10, 10  # 50 slow clients
ROUNDS = 8  # of the three requests, while the slow clients hold their connections


class Trickler:
    """One thread sending a byte to each trickling connection every `interval` seconds, for at most `limit` s."""

    def __init__(self, sockets: list[socket.socket], payload: bytes, interval: float, limit: float) -> None:
        self.sockets, self.payload, self.interval, self.limit = sockets, payload, interval, limit
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        position = 0
        while not self.stop.wait(self.interval) and time.monotonic() < deadline:
            byte = self.payload[position % len(self.payload):][:1]
            position += 1
            for sock in self.sockets:
                try:
                    sock.send(byte)
                except OSError:
                    continue  # answered and closed: the test checks for that where it matters

    def __enter__(self) -> Trickler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def slow_clients_web(database_url: str, tmp_path: pathlib.Path) -> Iterator[Web]:
    # Deadlines far beyond the test, so that the slow clients really stay for all of it.
    with web_process(database_url, tmp_path, MAILER_WEB_HEADER_TIMEOUT_S="120",
                     MAILER_WEB_REQUEST_TIMEOUT_S="120") as web:
        yield web


def open_slow_clients(web: Web) -> tuple[list[socket.socket], list[socket.socket], list[socket.socket]]:
    """50 connections: header trickle, body trickle, body stalled, idle. Returns (header, body, all)."""
    header_trickle, body_trickle, everyone = [], [], []
    for _ in range(SLOWLORIS):
        sock = web.connect()
        sock.sendall(b"POST /queue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        header_trickle.append(sock)
    for i in range(BODY_TRICKLE + BODY_STALLED):
        sock = web.connect()
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + EVENTS_HEADER.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[")
        (body_trickle if i < BODY_TRICKLE else everyone).append(sock)
    idle = [web.connect() for _ in range(IDLE)]
    everyone += header_trickle + body_trickle + idle
    return header_trickle, body_trickle, everyone


def timed(call) -> tuple[float, requests.Response]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        response = call()
    except requests.Timeout:
        pytest.fail(f"no answer within {ANSWER_WITHIN_S} s while 50 slow clients hold connections")
    return time.monotonic() - started, response


def test_the_web_tier_answers_while_50_slow_clients_hold_connections(slow_clients_web: Web) -> None:
    web = slow_clients_web
    header_trickle, body_trickle, everyone = open_slow_clients(web)
    try:
        time.sleep(1)  # every slow connection accepted and started before the first request
        headers = {"Connection": "close"}  # a new connection each time, so both processes take turns
        with Trickler(header_trickle, b"x", 0.5, 60), Trickler(body_trickle, b" ", 0.5, 60):
            for _ in range(ROUNDS):
                elapsed, health = timed(lambda: requests.get(f"{web.url}/healthz", headers=headers,
                                                             timeout=ANSWER_WITHIN_S))
                assert health.status_code == 200 and elapsed < ANSWER_WITHIN_S
                elapsed, queued = timed(lambda: requests.post(
                    f"{web.url}/queue", data=message_json(), timeout=ANSWER_WITHIN_S,
                    headers={**headers, "Authorization": f"Bearer {web.api_key}",
                             "Content-Type": "application/json"}))
                assert queued.status_code == 202, queued.text
                assert elapsed < ANSWER_WITHIN_S
                elapsed, events = timed(lambda: requests.post(
                    f"{web.url}/events", data=event_json(), timeout=ANSWER_WITHIN_S,
                    headers={**headers, "Authorization": EVENTS_HEADER, "Content-Type": "application/json"}))
                assert events.status_code == 200, events.text
                assert elapsed < ANSWER_WITHIN_S
                time.sleep(0.25)
            # The slow clients were there all along: none was answered or dropped.
            assert sum(still_open(sock) for sock in everyone) == len(everyone) == 50
    finally:
        for sock in everyone:
            sock.close()


def test_slow_requests_get_a_json_408_at_their_deadline(database_url: str, tmp_path: pathlib.Path) -> None:
    with web_process(database_url, tmp_path, MAILER_WEB_HEADER_TIMEOUT_S="1",
                     MAILER_WEB_REQUEST_TIMEOUT_S="3") as web:
        slowloris, trickle, stalled, idle = sockets = [web.connect() for _ in range(4)]
        try:
            slowloris.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            for sock in (trickle, stalled):
                sock.sendall(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n[")
            started = time.monotonic()
            with Trickler([slowloris, trickle], b" ", 0.2, 15):
                expected = [(slowloris, "headers", 1), (idle, "headers", 1), (trickle, "body", 3), (stalled, "body", 3)]
                for sock, what, deadline in expected:
                    answer = read_answer(sock, timeout=10)
                    took = time.monotonic() - started
                    assert answer.status == 408
                    assert answer.json()["error"]["code"] == "request_timeout"
                    assert what in answer.json()["error"]["message"]
                    assert answer.headers["content-type"] == "application/json"
                    assert answer.headers["x-content-type-options"] == "nosniff"
                    # The deadline is checked at least once a second; allow the loaded box some more.
                    assert deadline - 0.2 <= took <= deadline + 4, (what, took)
                    assert closed_by_server(sock)
        finally:
            for sock in sockets:
                sock.close()
        # The server still answers afterwards, and counted them.
        assert requests.get(f"{web.url}/healthz", timeout=5).status_code == 200
        scrape = requests.get(f"{web.url}/metrics", timeout=10).text
        assert 'mailer_web_refused_total{status="408"} 4.0' in scrape


def test_a_client_that_does_not_read_its_answers_is_cut_off(database_url: str, tmp_path: pathlib.Path) -> None:
    pipelined = 600  # answers of /openapi.json: far more than the socket buffers hold
    with web_process(database_url, tmp_path, MAILER_WEB_SEND_TIMEOUT_S="1") as web:
        size = len(requests.get(f"{web.url}/openapi.json", timeout=10).content)
        assert size * pipelined > 16 * 1024 * 1024
        with web.connect() as sock:
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * pipelined)
            time.sleep(4)  # not reading: the thread sending the answers gives up after 1 s
            received, deadline = b"", time.monotonic() + 30
            sock.settimeout(5)
            for _ in range(100_000):
                assert time.monotonic() < deadline, "the server neither finished nor closed"
                data = sock.recv(1024 * 1024)
                if not data:
                    break
                received += data
            answers = received.count(b"HTTP/1.1 200 OK")
            assert 0 < answers < pipelined  # closed part way, by the send timeout
        assert requests.get(f"{web.url}/healthz", timeout=5).status_code == 200
