"""gunicorn-level answers in the error shape, and the parser source that never reads the socket."""

from __future__ import annotations

import json
import socket

import pytest
from gunicorn.config import Config
from gunicorn.http import errors as http_errors
from gunicorn.http import get_parser

from mailer.web import responses
from mailer.web.worker import BufferedUnreader


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    left, right = socket.socketpair()
    try:
        parser = get_parser(Config(), left, ("127.0.0.1", 1))
        parser.unreader = BufferedUnreader()
        parser.unreader.unread(raw)
        right.sendall(b"GET /from-the-socket HTTP/1.1\r\n\r\n")  # must never be read
        request = next(parser)
        return request, request.body.read(), parser.unreader.take_buffered()
    finally:
        left.close()
        right.close()


def test_the_parser_reads_only_the_bytes_handed_over():
    request, body, rest = parse(b"POST /queue HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n")
    assert (request.method, request.path, body) == ("POST", "/queue", b"ok")
    assert rest == b"GET / HTTP/1.1\r\n"  # the next request, for the main loop to read on


def test_an_incomplete_request_ends_the_input_instead_of_waiting():
    with pytest.raises(http_errors.NoMoreData):
        parse(b"GET / HTTP/1.1\r\nHost: x\r\n")


def test_an_error_response_is_json_in_the_error_shape_with_nosniff():
    raw = responses.error_bytes(408, "Request Timeout", "request_timeout", "too slow")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert {"Content-Type: application/json", "Connection: close", "X-Content-Type-Options: nosniff",
            f"Content-Length: {len(body)}"} <= set(lines)
    assert json.loads(body) == {"error": {"code": "request_timeout", "message": "too slow", "details": {}}}


def test_a_long_parser_message_is_cut():
    raw = responses.error_bytes(400, "Bad Request", "malformed_request", "x" * 10_000)
    assert len(json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["message"]) == responses.MAX_MESSAGE


@pytest.mark.parametrize(("exc", "status", "code"), [
    (http_errors.LimitRequestLine(5000, 4094), 414, "uri_too_long"),
    (http_errors.LimitRequestHeaders("too many"), 431, "headers_too_large"),
    (http_errors.InvalidRequestLine("GARBAGE"), 400, "malformed_request"),
    (http_errors.InvalidHeader("X"), 400, "malformed_request"),
    (http_errors.InvalidChunkSize(b"zz"), 400, "malformed_request"),
    (http_errors.UnsupportedTransferCoding("gzip"), 400, "malformed_request"),  # gunicorn says 501
    (http_errors.ForbiddenProxyRequest("1.2.3.4"), 403, "forbidden"),
    (http_errors.ExpectationFailed("x"), 417, "expectation_failed"),
    (RuntimeError("app bug"), 500, "internal_error"),
])
def test_each_gunicorn_error_has_its_status_and_code(exc, status, code):
    rejected = responses.classify(exc)
    assert (rejected.status, rejected.code) == (status, code)
    if status == 500:
        assert "app bug" not in rejected.message  # no internals to the client
