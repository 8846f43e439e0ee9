"""Whether the bytes read so far hold one whole HTTP/1.1 request: its headers and its body.

The web worker (mailer/web/worker.py) reads requests without blocking and hands one to a thread only once
RequestFramer says it is complete, so a thread never waits on a slow client. It only finds where a request
ends; gunicorn's own parser still parses and validates it. When the framing is ambiguous (a
Transfer-Encoding other than chunked, both Transfer-Encoding and Content-Length, a malformed
Content-Length), the request counts as complete at the end of its headers, so that gunicorn's parser
refuses it at once.
"""

from __future__ import annotations

import dataclasses

CRLF = b"\r\n"
HEADERS_END = b"\r\n\r\n"
MAX_CHUNK_LINE = 1024  # a chunk size line (hex size and extensions); real ones are a few bytes
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
MAX_LENGTH_DIGITS = 18  # any Content-Length longer is over every body limit (and int() of 4,301+ digits raises)


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The request can never be accepted: the status to answer it with, and why."""

    status: int
    reason: str
    code: str
    message: str


class RequestFramer:
    """Fed a connection's bytes as they arrive, says when the request they start is complete."""

    def __init__(self, max_line: int, max_header_bytes: int, max_body_bytes: int) -> None:
        self.max_line = max_line
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.buffer = bytearray()
        self.headers_done = False
        self.complete = False
        self.expects_continue = False  # an HTTP/1.1 client waits for "100 Continue" before sending its body
        self._scan = 0  # where the search for the end of the headers resumes
        self._body_start = 0
        self._length: int | None = None  # a Content-Length body
        self._chunked = False
        self._chunk_pos = 0  # the next chunk size line (or trailer line)
        self._in_trailers = False
        self._decoded = 0  # chunk data seen so far

    def feed(self, data: bytes) -> Rejected | None:
        """Add the bytes that arrived; a Rejected when the request can never be accepted (else see .complete)."""
        self.buffer += data
        if not self.headers_done:
            rejected = self._find_headers()
            if rejected or not self.headers_done:
                return rejected
        if self._chunked:
            return self._scan_chunks()
        if self._length is not None and len(self.buffer) >= self._body_start + self._length:
            self.complete = True
        return None

    @property
    def body_pending(self) -> bool:
        """Headers are in and a body is still expected."""
        return self.headers_done and not self.complete

    def _find_headers(self) -> Rejected | None:
        end = self.buffer.find(HEADERS_END, max(0, self._scan - 3))
        if end < 0:
            self._scan = len(self.buffer)
            if self.buffer.find(CRLF, 0, self.max_line + 2) < 0 and len(self.buffer) > self.max_line + 1:
                return Rejected(414, "URI Too Long", "uri_too_long",
                                f"the request line is longer than {self.max_line} bytes")
            if len(self.buffer) > self.max_header_bytes:
                return _headers_too_large(self.max_header_bytes)
            return None
        if end + 4 > self.max_header_bytes:
            return _headers_too_large(self.max_header_bytes)
        self.headers_done = True
        self._body_start = end + 4
        return self._read_framing(bytes(self.buffer[:end]))

    def _read_framing(self, head: bytes) -> Rejected | None:
        lengths: list[bytes] = []
        codings: list[bytes] = []
        request_line, *lines = head.split(CRLF)
        http11 = request_line.rstrip().endswith(b"HTTP/1.1")  # HTTP/1.0 clients never wait for 100 Continue
        for line in lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                codings.extend(part.strip().lower() for part in value.split(b","))
            elif name == b"expect" and value.strip().lower() == b"100-continue" and http11:
                self.expects_continue = True
        if codings:
            if lengths or codings[-1] != b"chunked":
                self.complete = True  # gunicorn's parser refuses it
                return None
            self._chunked = True
            self._chunk_pos = self._body_start
            return self._scan_chunks()
        if len(set(lengths)) > 1 or (lengths and not lengths[0].isdigit()):
            self.complete = True  # gunicorn's parser refuses it
            return None
        if lengths and len(lengths[0]) > MAX_LENGTH_DIGITS:
            return _body_too_large(self.max_body_bytes)
        length = int(lengths[0]) if lengths else 0
        if length > self.max_body_bytes:
            return _body_too_large(self.max_body_bytes)
        self._length = length
        self.complete = len(self.buffer) >= self._body_start + length
        return None

    def _scan_chunks(self) -> Rejected | None:
        # Bounded like a Content-Length body: the data by max_body_bytes, the framing around it (size
        # lines, trailers) by max_header_bytes, whatever the number of chunks.
        while True:
            framing = self._chunk_pos - self._body_start - self._decoded
            if framing > self.max_header_bytes:
                return Rejected(413, "Content Too Large", "payload_too_large",
                                f"the chunked framing is larger than {self.max_header_bytes} bytes")
            line_end = self.buffer.find(CRLF, self._chunk_pos)
            if line_end < 0:
                if len(self.buffer) - self._chunk_pos > MAX_CHUNK_LINE:
                    return _bad_chunk("a chunk size line is too long")
                return None
            line = bytes(self.buffer[self._chunk_pos:line_end])
            if self._in_trailers:
                self._chunk_pos = line_end + 2
                if not line:
                    self.complete = True
                    return None
                continue
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or not set(size_text) <= HEX_DIGITS:
                return _bad_chunk("a chunk size is not a hexadecimal number")
            size = int(size_text, 16)
            if size == 0:
                self._in_trailers = True
                self._chunk_pos = line_end + 2
                continue
            if self._decoded + size > self.max_body_bytes:
                return _body_too_large(self.max_body_bytes)
            data_end = line_end + 2 + size
            if len(self.buffer) < data_end + 2:
                return None
            if self.buffer[data_end:data_end + 2] != CRLF:
                return _bad_chunk("a chunk does not end with CRLF")
            self._decoded += size
            self._chunk_pos = data_end + 2


def _headers_too_large(limit: int) -> Rejected:
    return Rejected(431, "Request Header Fields Too Large", "headers_too_large",
                    f"the request line and headers are larger than {limit} bytes")


def _body_too_large(limit: int) -> Rejected:
    return Rejected(413, "Content Too Large", "payload_too_large", f"request body is larger than {limit} bytes")


def _bad_chunk(message: str) -> Rejected:
    return Rejected(400, "Bad Request", "malformed_request", f"invalid chunked body: {message}")
