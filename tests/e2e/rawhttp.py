"""Raw-socket HTTP for the web tier's tests: gunicorn started as the Procfile starts it, slow clients, answers."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import requests

from mailer import pgcluster
from mailer.services import apps
from tests.conftest import EVENTS_AUTH

ROOT = pathlib.Path(__file__).resolve().parents[2]
EVENTS_HEADER = "Basic " + base64.b64encode(EVENTS_AUTH.encode()).decode()


@dataclasses.dataclass
class Web:
    """A running `gunicorn wsgi:app` on loopback."""

    port: int
    api_key: str
    log: pathlib.Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


@contextlib.contextmanager
def web_process(database_url: str, log_dir: pathlib.Path, **extra_env: str) -> Iterator[Web]:
    """The Procfile's `gunicorn wsgi:app` (gunicorn.conf.py read from the checkout), bound to loopback only."""
    with psycopg.connect(database_url) as conn:
        _, api_key = apps.create_app(conn, "web-tier")
    port = pgcluster.free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "MAILER_EVENTS_AUTH": EVENTS_AUTH, "PORT": str(port),
           "PYTHONUNBUFFERED": "1", **extra_env}
    env.pop("GUNICORN_CMD_ARGS", None)
    log = log_dir / "web.log"
    with log.open("wb") as out:
        # --bind only narrows gunicorn.conf.py's 0.0.0.0:$PORT to loopback; everything else is the Procfile's.
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    web = Web(port, api_key, log)
    try:
        deadline = time.monotonic() + 30
        while not _ready(web.url):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn not ready within 30 s\n" + log.read_text()[-3000:]
            time.sleep(0.1)
        yield web
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _ready(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    return False


@dataclasses.dataclass
class Answer:
    """One HTTP response read off a raw socket."""

    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def read_answer(sock: socket.socket, timeout: float = 10) -> Answer:
    """Read one final response (1xx skipped), within `timeout` seconds overall."""
    deadline = time.monotonic() + timeout
    buffer = b""
    for _ in range(10_000):
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head, rest = buffer[:end].decode("latin-1"), buffer[end + 4:]
            status_line, *lines = head.split("\r\n")
            status = int(status_line.split()[1])
            headers = {name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines)}
            if 100 <= status < 200:
                buffer = rest
                continue
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                rest += _recv(sock, deadline)
            return Answer(status, headers, rest[:length])
        buffer += _recv(sock, deadline)
    raise AssertionError("no complete response")


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    assert remaining > 0, "no answer in time"
    sock.settimeout(remaining)
    data = sock.recv(65536)
    assert data, "connection closed before a complete response"
    return data


def closed_by_server(sock: socket.socket, timeout: float = 5) -> bool:
    """Whether the server closes the connection (EOF) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock: socket.socket) -> bool:
    """Whether the server has neither answered nor closed this connection."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return False


def message_json() -> bytes:
    return json.dumps({"from": {"email": "shop@example.com"}, "to": [{"email": "c@example.org"}],
                       "subject": "S", "text": "T"}).encode()


def event_json() -> bytes:
    return json.dumps([{"event": "open", "time": 1700000000, "MessageID": 1, "email": "c@example.org"}]).encode()
