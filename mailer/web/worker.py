"""gunicorn's gthread worker, but a thread only ever gets a request that has fully arrived.

Stock gthread gives a connection to a thread, which then blocks reading it: a few clients that send a
header line every few seconds, or half a body, hold every thread, and the process stops answering. Here
the worker's main loop (one selector, no threads) reads every connection without blocking until
RequestFramer (mailer/web/framing.py) says its headers and body are in, then hands the bytes to gunicorn's
parser and the request to a thread. Slow clients cost a buffer and a file descriptor each (at most
worker_connections per process, and buffered bytes at most MAILER_WEB_MAX_BUFFERED_BYTES per process, 503
beyond), never a thread. A request must complete its headers within MAILER_WEB_HEADER_TIMEOUT_S and its body
within MAILER_WEB_REQUEST_TIMEOUT_S of its first byte (408 in the error shape after that), and a client that
falls behind taking its responses is cut off MAILER_WEB_SEND_TIMEOUT_S later (mailer/web/sending.py). Nothing
on the main loop blocks: a connection is closed by a half-close and a drain the selector watches.
Written against gunicorn 27.0.1 (pinned in pyproject.toml): it replaces the worker's accept, keep-alive
and per-request paths, and serves HTTP/1.1 only (no TLS, no HTTP/2: the platform's router terminates them).
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn import http, util
from gunicorn.http.unreader import Unreader
from gunicorn.workers import gthread

from mailer import metrics
from mailer.config import Settings
from mailer.web import responses
from mailer.web.framing import Rejected, RequestFramer
from mailer.web.sending import DeadlineSocket, SendState, SendTimeout

READ_SIZE = 256 * 1024  # one recv per readable event; a 20 MiB body takes 80 loop turns
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A closed connection's read side is drained this long, or this many bytes, before the close: so that
# the kernel does not answer the client's unread bytes with an RST that would cut our last response.
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024


BUSY = Rejected(503, "Service Unavailable", "server_busy",
                "the server holds too many request bytes now: retry in a moment")


class BufferedUnreader(Unreader):
    """The parser's source: the bytes the main loop read, never the socket (a thread must not wait on a client)."""

    def chunk(self, size_hint: int | None = None) -> bytes:
        """Nothing beyond what was handed over: to the parser, the end of the input."""
        return b""


class Conn(gthread.TConn):
    """A gthread connection with the request being read and its deadlines."""

    framer: RequestFramer | None = None
    header_deadline = 0.0
    request_deadline = 0.0
    continue_sent = False
    polled = False  # registered with the worker's selector for _on_readable
    linger_deadline = 0.0
    drained = 0
    send_state: SendState


class BufferingWorker(gthread.ThreadWorker):
    """gthread, with each request read whole in the main loop before a thread gets it."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Refuse the settings this worker does not serve (TLS, HTTP/2)."""
        super().check_config(cfg, log)
        if cfg.is_ssl or "h2" in cfg.http_protocols:
            raise RuntimeError("mailer's web worker serves plain HTTP/1.1: terminate TLS and HTTP/2 before it")

    def init_process(self) -> None:
        """Read the limits, then run gthread's setup (which starts the loop)."""
        settings = Settings.from_env()
        self.header_timeout = settings.web_header_timeout_s
        self.request_timeout = settings.web_request_timeout_s
        self.send_timeout = settings.web_send_timeout_s
        self.max_header_bytes = settings.web_max_header_bytes
        self.max_body_bytes = settings.max_body_bytes
        # At least one request of the largest size fits, whatever the setting.
        self.max_buffered = max(settings.web_max_buffered_bytes, self.max_body_bytes + self.max_header_bytes)
        self.buffered = 0  # bytes held by the framers of self.reading
        self.reading: dict[Conn, None] = {}  # connections whose request is being read, oldest first
        self.lingering: dict[Conn, None] = {}  # connections half-closed, draining before their close
        super().init_process()

    # --- main loop: accept, read, hand over -------------------------------------------------------

    def accept(self, listener: Any) -> None:
        """Accept a connection and start reading its first request."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = Conn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking, for good
        conn.send_state = SendState()
        self._guarded(conn, self._start_request, conn, b"")

    def on_client_socket_readable(self, conn: Conn, client: Any) -> None:
        """A kept-alive connection has its next request coming: read it like a new one."""
        self.keepalived_conns.remove(conn)
        self._guarded(conn, self._start_request, conn, b"", polled=True)

    def _guarded(self, conn: Conn, step: Any, *args: Any, **kwargs: Any) -> None:
        # Whatever a client sends, an exception costs that one connection, never the process (and with it
        # every request in flight): it gets a 400 and is closed.
        try:
            step(*args, **kwargs)
        except Exception:
            self.log.exception("Unexpected error reading a request from ip=%s", conn.client[0] if conn.client else "")
            if conn not in self.lingering:
                metrics.WEB_REFUSED.labels(status="400").inc()
                self._send_quietly(conn, responses.error_bytes(400, "Bad Request", "malformed_request",
                                                               "the request could not be read"))
                self._close(conn, linger=True)

    def _start_request(self, conn: Conn, already: bytes, polled: bool = False) -> None:
        # polled: still registered with the selector (under the keep-alive callback).
        now = time.monotonic()
        conn.framer = RequestFramer(self.cfg.limit_request_line or self.max_header_bytes,
                                    self.max_header_bytes, self.max_body_bytes)
        conn.header_deadline = now + self.header_timeout
        conn.request_deadline = now + self.request_timeout
        conn.continue_sent = False
        conn.polled = polled
        self.reading[conn] = None
        # The request is often there already (and a kept-alive connection is readable): read it before
        # asking the selector, so that a request that came whole costs no selector calls.
        if self._take(conn, already) if already else self._read(conn):
            return
        callback = partial(self._on_readable, conn)
        if polled:
            self.poller.modify(conn.sock, selectors.EVENT_READ, callback)
        else:
            self.poller.register(conn.sock, selectors.EVENT_READ, callback)
            conn.polled = True

    def _on_readable(self, conn: Conn, _client: Any) -> None:
        self._guarded(conn, self._read, conn)

    def _read(self, conn: Conn) -> bool:
        """Read what arrived; whether the connection left the reading state."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._close(conn)
            return True
        if not data:
            self._close(conn)  # the client went away
            return True
        return self._take(conn, data)

    def _take(self, conn: Conn, data: bytes) -> bool:
        """Feed bytes to the connection's framer; whether it left the reading state."""
        framer = conn.framer
        if framer is None:  # already handed over or closed
            return True
        before = len(framer.buffer)
        try:
            rejected = framer.feed(data)
        finally:
            self.buffered += len(framer.buffer) - before  # exact even if feed raised
        if rejected is not None:
            self._refuse(conn, responses.rejected_bytes(rejected), rejected)
            return True
        if framer.complete:
            self._dispatch(conn, framer)
            return True
        if self.buffered > self.max_buffered:
            self._refuse(conn, responses.rejected_bytes(BUSY), BUSY)
            return True
        if framer.expects_continue and framer.body_pending and not conn.continue_sent:
            conn.continue_sent = True
            self._send_quietly(conn, CONTINUE)
        return False

    def _dispatch(self, conn: Conn, framer: RequestFramer) -> None:
        self._stop_reading(conn)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = BufferedUnreader()
            conn.initialized = conn.data_ready = True
        conn.parser.unreader.unread(framer.buffer)  # copied once, into the parser's buffer
        self.enqueue_req(conn)

    def murder_pending(self) -> None:
        """gthread's sweep, plus a 408 for each request past its deadline (the loop runs at least every second)."""
        super().murder_pending()
        if not self.alive:  # stopping: connections that have sent nothing yet are not waited for
            for conn in [conn for conn in self.reading if conn.framer is not None and not conn.framer.buffer]:
                self._close(conn)
        now = time.monotonic()
        late = [conn for conn in self.reading if now >= min(conn.request_deadline, self._header_cutoff(conn))]
        for conn in late:
            if conn.framer is not None and conn.framer.headers_done:
                what, seconds = "the request body", self.request_timeout
            else:
                what, seconds = "the request headers", min(self.header_timeout, self.request_timeout)
            metrics.WEB_REFUSED.labels(status="408").inc()
            self._send_quietly(conn, responses.timeout_bytes(what, seconds))
            self._close(conn, linger=True)
        for conn in [conn for conn in self.lingering if now >= conn.linger_deadline]:
            self._end_linger(conn)

    @staticmethod
    def _header_cutoff(conn: Conn) -> float:
        return float("inf") if conn.framer is None or conn.framer.headers_done else conn.header_deadline

    def _refuse(self, conn: Conn, response: bytes, rejected: Rejected) -> None:
        self.log.warning("Refused request from ip=%s: %s %s", conn.client[0] if conn.client else "",
                         rejected.status, rejected.message)
        metrics.WEB_REFUSED.labels(status=str(rejected.status)).inc()
        self._send_quietly(conn, response)
        self._close(conn, linger=True)

    def _send_quietly(self, conn: Conn, data: bytes) -> None:
        # One non-blocking send: these answers are small enough for the socket buffer, and a client that
        # does not take them loses them.
        try:
            conn.sock.send(data)
        except OSError:
            self.log.debug("Could not send to ip=%s", conn.client)

    def _unpoll(self, conn: Conn) -> None:
        if conn.polled:
            conn.polled = False
            self.poller.unregister(conn.sock)

    def _stop_reading(self, conn: Conn) -> None:
        self._unpoll(conn)
        self.reading.pop(conn, None)
        if conn.framer is not None:
            self.buffered -= len(conn.framer.buffer)
            conn.framer = None

    def _close(self, conn: Conn, linger: bool = False) -> None:
        self._stop_reading(conn)
        if linger:
            self._linger(conn)
            return
        self.nr_conns -= 1
        conn.close()

    def _linger(self, conn: Conn) -> None:
        """Close without blocking: half-close now, drain what the client still sends, close at EOF or the deadline."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))
        except (OSError, ValueError, KeyError):
            self.nr_conns -= 1
            util.close(conn.sock)
            return
        conn.linger_deadline = time.monotonic() + LINGER_S
        conn.drained = 0
        self.lingering[conn] = None

    def _on_linger_readable(self, conn: Conn, _client: Any) -> None:
        try:
            data = conn.sock.recv(LINGER_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained >= LINGER_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: Conn) -> None:
        if self.lingering.pop(conn, 0) is None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            util.close(conn.sock)

    # --- after a request --------------------------------------------------------------------------

    def finish_request(self, conn: Conn, fs: Any) -> None:  # type: ignore[override]
        """Back on the main loop: read the next request (pipelined or kept alive), or close."""
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        try:
            if not keep:
                self._linger(conn)
                return
            conn.sock.setblocking(False)  # util.close_graceful may have left it in timeout mode
            pipelined = conn.parser.unreader.take_buffered()
            if pipelined:
                self._guarded(conn, self._start_request, conn, pipelined)
                return
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + gthread.STOP_KEEPALIVE_LINGER)
            self.keepalived_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
        except Exception:
            self.log.exception("Unexpected error after a request from ip=%s", conn.client[0] if conn.client else "")
            self._stop_reading(conn)
            self.nr_conns -= 1
            conn.close()

    # --- in a thread: the request is complete -----------------------------------------------------

    def handle(self, conn: Conn) -> bool:  # type: ignore[override]
        """Serve one complete request (its bytes are in the parser); whether to keep the connection."""
        req = None
        # The socket stays non-blocking: DeadlineSocket waits for room up to the connection's send deadline.
        # The parser reads only the bytes handed over, never the socket.
        raw = conn.sock
        sock = DeadlineSocket(raw, conn.send_state, self.send_timeout)
        try:
            conn.send_state.reset_if_drained(raw)
            req = next(conn.parser)
            if not req:
                return False
            # The body is in already: the framer sent the 100 Continue it waited for, if any; not another.
            req._expected_100_continue = False
            conn.sock = sock  # what wsgi.create hands the response
            try:
                return bool(self._keepalive_after(conn, self.handle_request(req, conn)))
            finally:
                conn.sock = raw
        except http.errors.NoMoreData:
            # The parser wanted more than the framer found in the request: the framing is not what it seems.
            self.handle_error(req, sock, conn.client, http.errors.InvalidHeader("incomplete request"))
            return False
        except StopIteration:
            return False
        except SendTimeout:
            self.log.info("Client ip=%s fell behind taking its responses for %s s: cut off",
                          conn.client[0] if conn.client else "", self.send_timeout)
            return False
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            return False
        except Exception as e:
            self.handle_error(req, sock, conn.client, e)
            return False

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's errors (bad request line, headers, chunks; app crashes) in the error shape, not HTML."""
        rejected = responses.classify(exc)
        ip = addr[0] if addr else ""
        if rejected.status >= 500:
            self.log.exception("Error handling request from ip=%s", ip)
        else:
            # The exception's type only: its text may quote the request line, and with it a path holding an
            # address (/suppressions/{email}), which the app's own request log redacts.
            self.log.warning("Invalid request from ip=%s: %s %s", ip, rejected.status, type(exc).__name__)
        metrics.WEB_REFUSED.labels(status=str(rejected.status)).inc()
        try:
            client.sendall(responses.rejected_bytes(rejected))
        except Exception:
            self.log.debug("Failed to send error message.")
