"""Post one webhook delivery: resolve once, check every address, connect only to a checked one (Host, SNI
and certificate for the name), sign, bound the whole attempt, and say what happened in coarse words."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import socket
import threading
import time
import urllib.parse

import certifi
import urllib3

from mailer.config import Settings
from mailer.services import ssrf, webhooks
from mailer.store.webhooks import ClaimedDelivery

# Read at most this much of a subscriber's answer (it is not kept: only drained before the connection closes).
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "mailer-webhooks/1"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one POST to a subscriber came to."""

    attempted_at: dt.datetime
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


# What an attempt's log says when no HTTP answer came. Deliberately coarse: a refused connection, a reset,
# a TLS failure and a closed port all read the same, so the log cannot be used to scan ports.
REFUSED_ADDRESS = "refused address"
CONNECTION_FAILED = "connection failed"
TIMEOUT = "timeout"
NOT_RESOLVED = "name not resolved"
UNSIGNABLE = "secret unreadable"


class _Guard:
    """One attempt's sockets: each checked against the SSRF rules once connected, all cut at the deadline."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def adopt(self, sock: socket.socket) -> socket.socket:
        try:
            ssrf.check_peer(sock.getpeername(), self.allow_private)
        except (ssrf.UnsafeURL, OSError):
            sock.close()
            raise
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("the attempt's deadline passed")
            self._sockets.append(sock)
        return sock

    def expire(self) -> None:
        """The deadline: cut every connection, which ends a read the subscriber is dripping out."""
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _guarded(sock: socket.socket) -> socket.socket:
    guard: _Guard | None = getattr(_current, "guard", None)
    if guard is None:  # only post() opens these connections; never connect unchecked
        sock.close()
        raise ssrf.UnsafeURL("connection opened outside of an attempt")
    return guard.adopt(sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded(super()._new_conn())


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded(super()._new_conn())


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection  # type: ignore[assignment]  # a subclass of the expected class


def ca_certs() -> str:
    """The CA bundle subscribers' certificates are verified against."""
    return certifi.where()


def _pool_for(
    target: ssrf.Target, address: ssrf.IPAddress, scheme: str, timeout_s: float
) -> urllib3.HTTPConnectionPool:
    """A connection pool to `address` itself (the checked one: no second lookup), speaking to the host
    name: TLS sends it as SNI and verifies the certificate against it."""
    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    if scheme == "https":
        return _HTTPSPool(
            str(address), target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs(),
        )
    return _HTTPPool(str(address), target.port, timeout=timeout, retries=False, maxsize=1)


def _request_target(url: str) -> tuple[str, str, dict[str, str]]:
    """The scheme, the path with its query, and the Host (and basic auth) headers of a URL."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    headers = {"host": host}
    if parts.username is not None:
        auth = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers.update(urllib3.util.make_headers(basic_auth=auth))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, path, headers


def post(delivery: ClaimedDelivery, settings: Settings) -> Attempt:
    """POST one delivery, signed, to an address checked once, no redirects, within the timeout.

    Raises only ssrf.ResolverBusy: no resolver thread was free for the name, so nothing was attempted."""
    # The name is resolved once, every address checked, and the connection made only to a checked address
    # (Host, SNI and the certificate still the name's): DNS rebinding has no second lookup to answer.
    # Errors are coarse (CONNECTION_FAILED, TIMEOUT, REFUSED_ADDRESS, the HTTP status).
    attempted_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    guard = _Guard(settings.webhook_allow_private)
    deadline = threading.Timer(settings.webhook_timeout_s, guard.expire)
    deadline.daemon = True
    status_code: int | None = None
    error: str | None = None
    body = delivery.body.encode("utf-8")
    timestamp = int(time.time())
    live = [delivery.secret] + ([delivery.previous_secret] if delivery.previous_secret else [])
    _current.guard = guard
    deadline.start()
    try:
        if not delivery.secret:
            raise _Unsignable
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "accept-encoding": "identity",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhooks.signature_header(live, delivery.message_id, timestamp, body),
        }
        scheme, path, target_headers = _request_target(delivery.url)
        dns_timeout_s = min(settings.webhook_dns_timeout_s, settings.webhook_timeout_s)
        target, addresses = ssrf.check_url(
            delivery.url, settings.webhook_allow_private, dns_timeout_s, delivery.app_id, settings.webhook_dns_threads
        )
        pool, response = _post_to_first(
            target, addresses, scheme, path, body, {**headers, **target_headers}, settings.webhook_timeout_s
        )
        try:
            status_code = response.status
            response.read(MAX_RESPONSE_BYTES, decode_content=False)
        finally:
            response.close()
            pool.close()
        if 300 <= status_code < 400:
            error = f"HTTP {status_code}: redirects are not followed"
        elif not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except _Unsignable:
        error = UNSIGNABLE
    except ssrf.Unresolvable:
        error = NOT_RESOLVED
    except ssrf.UnsafeURL:
        error = REFUSED_ADDRESS
    except urllib3.exceptions.NewConnectionError:  # refused, unreachable (a subclass of the connect timeout)
        error = TIMEOUT if guard.expired else CONNECTION_FAILED
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if guard.expired or isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
            error = TIMEOUT
        else:
            error = CONNECTION_FAILED
    finally:
        deadline.cancel()
        _current.guard = None
    latency_ms = round((time.monotonic() - started) * 1000)
    return Attempt(attempted_at=attempted_at, status_code=status_code, latency_ms=latency_ms, error=error)


class _Unsignable(Exception):
    """The delivery's secret could not be decrypted: nothing is sent."""


def _post_to_first(
    target: ssrf.Target,
    addresses: list[ssrf.IPAddress],
    scheme: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
    """POST to the first of the checked addresses that takes the connection: its pool (close it after
    reading) and the answer."""
    failure: Exception | None = None
    for address in addresses:
        pool = _pool_for(target, address, scheme, timeout_s)
        try:
            return pool, pool.urlopen(
                "POST", path, body=body, headers=headers, redirect=False, retries=False, preload_content=False,
                assert_same_host=False, release_conn=False,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # nothing was sent: the next address may answer
            failure = exc
            pool.close()
        except BaseException:
            pool.close()
            raise
    raise failure or OSError("no address")
