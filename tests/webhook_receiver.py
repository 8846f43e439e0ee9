"""A real HTTP subscriber for webhook tests, and a Standard Webhooks verifier written from the spec.

The verifier is deliberately independent of mailer's signer: it follows the text of
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
(signed content "{webhook-id}.{webhook-timestamp}.{body}", HMAC-SHA256 keyed by the base64-decoded
secret after "whsec_", base64 signatures as "v1,<sig>", several space-separated in one header).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

TOLERANCE_S = 300


class SignatureInvalid(Exception):
    """The webhook's headers do not verify."""


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> Any:
    """Verify one webhook like a subscriber would; its parsed JSON body (SignatureInvalid otherwise)."""
    try:
        msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
        signatures = headers["webhook-signature"]
    except KeyError as exc:
        raise SignatureInvalid(f"missing header {exc}") from None
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureInvalid("webhook-timestamp is not an integer") from None
    if abs((time.time() if now is None else now) - sent_at) > TOLERANCE_S:
        raise SignatureInvalid("webhook-timestamp is too far from now")
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return json.loads(body)
    raise SignatureInvalid("no signature matches")


@dataclasses.dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def verify(self, secret: str) -> Any:
        return verify(secret, self.headers, self.body)


@dataclasses.dataclass
class Plan:
    """How the receiver answers on one path: a queue of status codes first, then `status`."""

    statuses: list[int] = dataclasses.field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0
    drip_s: float = 0.0  # send the headers one byte at a time, this long apart


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records every request and answers per plan."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.plans: dict[str, Plan] = {}
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with receiver._cond:
                    receiver.requests.append(received)
                    receiver._cond.notify_all()
                    plan = receiver.plans.setdefault(self.path, Plan())
                    status = plan.statuses.pop(0) if plan.statuses else plan.status
                time.sleep(plan.delay_s)
                if plan.drip_s:
                    for char in f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode():
                        self.wfile.write(bytes([char]))
                        self.wfile.flush()
                        time.sleep(plan.drip_s)
                    return
                answer = b"x" * 10_000 if status >= 400 else b"ok"
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.url("/redirected"))
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *statuses: int, status: int = 200, delay_s: float = 0.0, drip_s: float = 0.0) -> None:
        with self._cond:
            self.plans[path] = Plan(list(statuses), status, delay_s, drip_s)

    def on(self, path: str) -> list[Received]:
        with self._cond:
            return [request for request in self.requests if request.path == path]

    def wait_for(self, count: int, timeout: float = 10.0, path: str | None = None) -> list[Received]:
        """Block until `count` requests (on `path`, if given) arrived; them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(got)} of {count} webhooks arrived within {timeout} s")
                self._cond.wait(remaining)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def verify_all(secrets: Sequence[str], received: Received) -> list[bool]:
    """For each secret, whether it alone verifies the request."""
    results = []
    for secret in secrets:
        try:
            received.verify(secret)
            results.append(True)
        except SignatureInvalid:
            results.append(False)
    return results
