"""RequestFramer: when the bytes read so far hold a whole request, and which requests it refuses at once."""

from __future__ import annotations

import pytest

from mailer.web.framing import RequestFramer

HEAD = b"POST /queue HTTP/1.1\r\nHost: x\r\n"


def framer(max_line: int = 100, max_header_bytes: int = 1000, max_body_bytes: int = 50) -> RequestFramer:
    return RequestFramer(max_line, max_header_bytes, max_body_bytes)


def feed_bytewise(f: RequestFramer, raw: bytes) -> int | None:
    """Feed one byte at a time; the number of bytes fed when it was complete (None if never)."""
    for i in range(len(raw)):
        assert f.feed(raw[i:i + 1]) is None
        if f.complete:
            return i + 1
    return None


def test_a_request_without_body_is_complete_at_the_end_of_its_headers():
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    assert feed_bytewise(framer(), raw) == len(raw)


def test_a_content_length_body_is_complete_at_its_last_byte():
    raw = HEAD + b"Content-Length: 5\r\n\r\nhello"
    f = framer()
    assert feed_bytewise(f, raw) == len(raw)
    assert f.headers_done


def test_bytes_after_the_request_do_not_change_it():
    f = framer()
    assert f.feed(HEAD + b"Content-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n") is None
    assert f.complete


def test_header_names_are_case_insensitive_and_values_trimmed():
    f = framer()
    f.feed(HEAD + b"content-LENGTH:   3  \r\n\r\nab")
    assert f.body_pending and not f.complete
    f.feed(b"c")
    assert f.complete


def test_a_chunked_body_is_complete_after_the_last_chunk_and_trailers():
    raw = HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert feed_bytewise(framer(), raw) == len(raw)


def test_transfer_encoding_lists_are_chunked_when_chunked_is_last():
    raw = HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    assert feed_bytewise(framer(), raw) == len(raw)


@pytest.mark.parametrize("headers", [
    b"Transfer-Encoding: gzip\r\n",  # not chunked last: gunicorn refuses it
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",  # both: gunicorn refuses it
    b"Content-Length: 1\r\nContent-Length: 2\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 0x10\r\n",
])
def test_ambiguous_framing_is_complete_at_the_end_of_the_headers(headers):
    f = framer()
    assert f.feed(HEAD + headers + b"\r\n") is None
    assert f.complete  # handed to gunicorn's parser at once, which answers 400


def test_the_same_content_length_twice_is_one_length():
    f = framer()
    f.feed(HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n")
    assert not f.complete
    f.feed(b"ab")
    assert f.complete


def test_expect_100_continue_is_noticed():
    f = framer()
    f.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert f.expects_continue and f.body_pending


def test_a_request_line_without_end_beyond_the_limit_is_414():
    f = framer(max_line=100)
    assert f.feed(b"GET /" + b"a" * 90) is None
    rejected = f.feed(b"a" * 20)
    assert rejected is not None and (rejected.status, rejected.code) == (414, "uri_too_long")


def test_headers_beyond_the_limit_are_431_even_before_their_end():
    f = framer(max_header_bytes=1000)
    assert f.feed(HEAD + b"X-A: b\r\n" * 100) is None  # 832 bytes
    rejected = f.feed(b"X-A: b\r\n" * 30)
    assert rejected is not None and (rejected.status, rejected.code) == (431, "headers_too_large")


def test_headers_that_end_beyond_the_limit_are_431():
    rejected = framer(max_header_bytes=1000).feed(HEAD + b"X-A: " + b"b" * 1000 + b"\r\n\r\n")
    assert rejected is not None and rejected.status == 431


def test_a_content_length_beyond_the_body_limit_is_413_at_once():
    rejected = framer(max_body_bytes=50).feed(HEAD + b"Content-Length: 51\r\n\r\n")
    assert rejected is not None and (rejected.status, rejected.code) == (413, "payload_too_large")
    assert framer(max_body_bytes=50).feed(HEAD + b"Content-Length: 50\r\n\r\n") is None


def test_a_chunked_body_beyond_the_body_limit_is_413_before_its_data_arrives():
    f = framer(max_body_bytes=50)
    assert f.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n20\r\n" + b"a" * 32 + b"\r\n") is None
    rejected = f.feed(b"13\r\n")  # 32 + 19 > 50
    assert rejected is not None and rejected.status == 413


def test_chunked_framing_is_bounded_whatever_the_number_of_chunks():
    f = framer(max_header_bytes=200, max_body_bytes=10_000)
    f.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    results = [f.feed(b"1;padding-padding\r\na\r\n") for _ in range(50)]
    rejected = next(r for r in results if r is not None)
    assert rejected.status == 413


@pytest.mark.parametrize("body", [
    b"zz\r\n",  # not hexadecimal
    b"\r\n",  # empty size
    b"12345678901234567\r\n",  # longer than 16 hex digits
    b"2\r\nabc\r\n",  # the data is longer than its size
    b"1" * 2000,  # a size line that never ends
])
def test_bad_chunk_framing_is_400(body):
    rejected = framer(max_body_bytes=10**9).feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert rejected is not None and (rejected.status, rejected.code) == (400, "malformed_request")


def test_unfinished_chunked_trailers_are_bounded():
    f = framer(max_header_bytes=1000)
    f.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n")
    assert f.feed(b"X-T: 1\r\n" * 10) is None and not f.complete
    rejected = f.feed(b"X" * 1100)
    assert rejected is not None and rejected.status == 400


def test_scanning_resumes_where_it_stopped():
    # One byte at a time, a 30 KB head: quadratic rescanning would take seconds.
    f = framer(max_header_bytes=40_000)
    raw = HEAD + b"X-A: b\r\n" * 3700 + b"\r\n"
    assert feed_bytewise(f, raw) == len(raw)


def test_a_content_length_of_thousands_of_digits_is_413_not_an_exception():
    for digits in (19, 5000):
        rejected = framer(max_header_bytes=10_000).feed(HEAD + b"Content-Length: " + b"1" * digits + b"\r\n\r\n")
        assert rejected is not None and rejected.status == 413


def test_a_content_length_of_leading_zeros_beyond_18_digits_is_refused_too():
    rejected = framer().feed(HEAD + b"Content-Length: " + b"0" * 30 + b"5\r\n\r\nhello")
    assert rejected is not None and rejected.status == 413


def test_only_http_1_1_clients_expect_100_continue():
    f = framer()
    f.feed(b"POST /queue HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert f.body_pending and not f.expects_continue
    f = framer()
    f.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert f.body_pending and f.expects_continue
