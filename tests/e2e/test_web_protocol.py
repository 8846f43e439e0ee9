"""gunicorn's own answers are JSON in the error shape with nosniff; keep-alive, pipelining, chunked, 100-continue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.e2e.rawhttp import Answer, Web, closed_by_server, message_json, read_answer, web_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, pg_cluster, template_db: str) -> Iterator[Web]:  # type: ignore[no-untyped-def]
    # One gunicorn for the module, on a database of its own (nothing here changes another test's rows).
    from tests.conftest import _janitor

    dbname = "mailer_test_web_protocol"
    janitor = _janitor(pg_cluster, dbname, template_dbname=template_db)
    janitor.init()
    runtime_dir = tmp_path_factory.mktemp("runtime")  # where gunicorn 25.1+ would open its control socket
    try:
        with web_process(pg_cluster.url(dbname), runtime_dir, XDG_RUNTIME_DIR=str(runtime_dir)) as running:
            yield running
    finally:
        janitor.drop()


def exchange(web: Web, raw: bytes) -> Answer:
    with web.connect() as sock:
        sock.sendall(raw)
        return read_answer(sock)


def assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-content-type-options"] == "nosniff"
    error = answer.json()["error"]
    assert error["code"] == code and error["message"] and error["details"] == {}


HOST = b"Host: 127.0.0.1\r\n"


@pytest.mark.parametrize(("raw", "status", "code"), [
    (b"GARBAGE\r\n\r\n", 400, "malformed_request"),
    (b"GET / HTTP/9.9\r\n" + HOST + b"\r\n", 400, "malformed_request"),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, "uri_too_long"),  # gunicorn's parser
    (b"GET /" + b"a" * 5000, 414, "uri_too_long"),  # the line has no end yet: the worker's framer
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",
     431, "headers_too_large"),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Big: b\r\n" * 8000, 431, "headers_too_large"),  # > 64 KiB
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"Bad Header\r\n\r\n", 400, "malformed_request"),
    (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-\x01: 1\r\n\r\n", 400, "malformed_request"),
    (b"POST /events HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "malformed_request"),
    (b"POST /events HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400,
     "malformed_request"),
    (b"POST /events HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n", 400, "malformed_request"),
    (b"POST /events HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400,
     "malformed_request"),
    (b"POST /events HTTP/1.1\r\n" + HOST + b"Content-Length: 99999999999\r\n\r\n", 413, "payload_too_large"),
])
def test_gunicorn_level_errors_are_json_in_the_error_shape(web: Web, raw: bytes, status: int, code: str) -> None:
    with web.connect() as sock:
        sock.sendall(raw)
        assert_error(read_answer(sock), status, code)
        assert closed_by_server(sock)


def test_flask_answers_carry_nosniff(web: Web) -> None:
    for path, status in (("/healthz", 200), ("/no-such-page", 404), ("/dashboard/login", 200)):
        response = requests.get(web.url + path, timeout=10)
        assert response.status_code == status, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path


def test_a_kept_alive_connection_serves_request_after_request(web: Web) -> None:
    with web.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
            assert read_answer(sock).status == 200


def test_pipelined_requests_are_each_answered(web: Web) -> None:
    body = message_json()
    post = (b"POST /queue HTTP/1.1\r\n" + HOST + b"Authorization: Bearer " + web.api_key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with web.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n" + post + post[:40])
        assert read_answer(sock).status == 200
        assert read_answer(sock).status == 202
        sock.sendall(post[40:])  # the third arrives in two parts, the first already read with the second
        assert read_answer(sock).status == 202


def test_a_chunked_body_is_served(web: Web) -> None:
    body = message_json()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    answer = exchange(web, b"POST /queue HTTP/1.1\r\n" + HOST + b"Authorization: Bearer " + web.api_key.encode()
                      + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + chunks + b"0\r\n\r\n")
    assert answer.status == 202, answer


def test_a_client_waiting_for_100_continue_gets_it(web: Web) -> None:
    body = message_json()
    with web.connect() as sock:
        sock.sendall(b"POST /queue HTTP/1.1\r\n" + HOST + b"Authorization: Bearer " + web.api_key.encode()
                     + b"\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
                     + b"Content-Length: %d\r\n\r\n" % len(body))
        sock.settimeout(5)
        assert sock.recv(25).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert read_answer(sock).status == 202


def test_gunicorn_opens_no_control_socket(web: Web) -> None:
    assert (web.log.parent / "web.log").exists()
    assert not (web.log.parent / "gunicorn.ctl").exists()
