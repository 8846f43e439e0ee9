"""The socket a thread writes its response to: never blocking past the connection's send deadline.

SO_SNDTIMEO bounded each send() but not a response: a client taking a kilobyte every 25 s kept a thread
sending for ever. Here the socket stays non-blocking and a send that cannot go on waits for it with poll(),
up to a deadline that starts when a send first had to wait and ends only once the client has taken
everything it was sent (the kernel's send queue is empty): a client that reads slowly, whether one big
answer or thousands of pipelined small ones, is cut off MAILER_WEB_SEND_TIMEOUT_S after it fell behind.
"""

from __future__ import annotations

import array
import fcntl
import select
import socket
import termios
import time
from typing import Any, BinaryIO

FILE_BLOCK = 64 * 1024


class SendTimeout(TimeoutError):
    """The client did not take its response in time (an OSError, so gunicorn passes it up as a socket error)."""


class SendState:
    """Per connection: since when its sends have been waiting on the client (None: it keeps up)."""

    def __init__(self) -> None:
        self.stalled_since: float | None = None

    def reset_if_drained(self, sock: socket.socket) -> None:
        """Forget the stall once the client has taken every byte sent so far."""
        if self.stalled_since is not None and unsent_bytes(sock) == 0:
            self.stalled_since = None


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes still in the kernel's send queue (not yet acknowledged by the client); -1 if unknown."""
    out = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, out)  # SIOCOUTQ on a Linux socket
    except OSError:
        return -1
    return out[0]


class DeadlineSocket:
    """A non-blocking socket's sends, waiting for room at most until the connection's send deadline."""

    def __init__(self, sock: socket.socket, state: SendState, timeout: float) -> None:
        self._sock = sock
        self._state = state
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def send(self, data: bytes) -> int:
        """Everything, like sendall (gunicorn's callers expect small writes to go whole)."""
        self.sendall(data)
        return len(data)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of data, or raise SendTimeout at the deadline."""
        view = memoryview(data).cast("B")
        while view:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            view = view[sent:]
            if view:
                self._wait_for_room()

    def sendfile(self, file: BinaryIO, offset: int = 0, count: int | None = None) -> int:
        """A file's bytes through sendall (so the deadline holds for them too)."""
        file.seek(offset)
        sent = 0
        while count is None or sent < count:
            block = file.read(FILE_BLOCK if count is None else min(FILE_BLOCK, count - sent))
            if not block:
                break
            self.sendall(block)
            sent += len(block)
        return sent

    def _wait_for_room(self) -> None:
        now = time.monotonic()
        if self._state.stalled_since is None:
            self._state.stalled_since = now
        remaining = self._state.stalled_since + self._timeout - now
        if remaining > 0:
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLOUT)
            if poller.poll(remaining * 1000):
                return
        raise SendTimeout(f"the client took too little of its response for {self._timeout:g} s")
