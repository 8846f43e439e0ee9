"""The answers gunicorn itself gives (bad framing, slow clients), as JSON in the error shape."""

from __future__ import annotations

import ssl

import orjson
from gunicorn.http import errors as http_errors

from mailer.web.framing import Rejected

MAX_MESSAGE = 200  # a parser's message may quote the client's input


def error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response in the error shape, closing the connection."""
    body = orjson.dumps({"error": {"code": code, "message": message[:MAX_MESSAGE], "details": {}}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


def rejected_bytes(rejected: Rejected) -> bytes:
    """The response for a request the framer refused."""
    return error_bytes(rejected.status, rejected.reason, rejected.code, rejected.message)


def timeout_bytes(what: str, seconds: float) -> bytes:
    """The 408 for a client that did not send its request in time."""
    return error_bytes(408, "Request Timeout", "request_timeout", f"{what} did not arrive within {seconds:g} s")


def classify(exc: BaseException) -> Rejected:
    """The status and error code for an exception gunicorn's parser (or the app's socket) raised."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, http_errors.LimitRequestLine):
        return Rejected(414, "URI Too Long", "uri_too_long", message)
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return Rejected(431, "Request Header Fields Too Large", "headers_too_large", message)
    if isinstance(exc, http_errors.ForbiddenProxyRequest):
        return Rejected(403, "Forbidden", "forbidden", "request forbidden")
    if isinstance(exc, http_errors.ExpectationFailed):
        return Rejected(417, "Expectation Failed", "expectation_failed", message)
    if isinstance(exc, http_errors.ConfigurationProblem):
        return Rejected(500, "Internal Server Error", "internal_error", "internal error")
    if isinstance(exc, http_errors.ParseException | ssl.SSLError):
        # Includes UnsupportedTransferCoding, which gunicorn answers 501: the contract wants a 4xx.
        return Rejected(400, "Bad Request", "malformed_request", f"{type(exc).__name__}: {message}")
    return Rejected(500, "Internal Server Error", "internal_error", "internal error")
