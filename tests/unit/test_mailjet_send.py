"""Tests for the Mailjet Send API client, against real local HTTP servers."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from mailer.mailjet import send, simulator

AUTH = ("key", "secret")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class Canned:
    """A WSGI app answering queued (status, headers, body) triples and recording requests."""

    def __init__(self) -> None:
        self.answers: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.requests: list[Request] = []

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        req = Request(environ)
        req.get_data()
        self.requests.append(req)
        status, headers, body = self.answers.popleft()
        return Response(body, status, headers)(environ, start_response)


def _serve(app: Any) -> Iterator[tuple[str, Any]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def canned() -> Iterator[tuple[send.MailjetClient, Canned]]:
    for base, app in _serve(Canned()):
        client = send.MailjetClient(base, "key", "secret", timeout=5)
        yield client, app
        client.close()


@pytest.fixture
def sim() -> Iterator[tuple[send.MailjetClient, str]]:
    config = simulator.SimulatorConfig(*AUTH, timeout_s=1.0)
    server, thread = simulator.start_in_thread("127.0.0.1", 0, config)
    base = f"http://127.0.0.1:{server.server_port}"
    client = send.MailjetClient(base, "key", "secret", timeout=5)
    yield client, base
    client.close()
    server.shutdown()
    thread.join()
    server.server_close()


def _out(custom_id: str, *to: str, **extra: Any) -> send.OutgoingMessage:
    message = {"from": {"email": "app@example.com", "name": "App"},
               "to": [{"email": t, "name": None} for t in to], "subject": "Hi", "text": "Hello",
               **extra}
    return send.OutgoingMessage(custom_id, message)


def _script(base: str, *responses: str) -> None:
    requests.post(f"{base}/_sim/script", json={"responses": list(responses)}, timeout=5)


def test_build_payload_maps_every_field_and_omits_empties() -> None:
    full = send.OutgoingMessage("job-1", {
        "from": {"email": "app@example.com", "name": "App"},
        "to": [{"email": "a@example.com", "name": "Alice"}, {"email": "b@example.com"}],
        "cc": [], "bcc": [{"email": "c@example.com", "name": None}],
        "reply_to": {"email": "help@example.com", "name": None}, "subject": "Hi",
        "text": "Hello", "html": None, "template_id": 42, "variables": {"n": 1},
        "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content": "aGk="}],
        "headers": {"X-Tag": "t"}})
    (payload,) = send.build_payload([full])["Messages"]
    assert payload == {
        "From": {"Email": "app@example.com", "Name": "App"},
        "To": [{"Email": "a@example.com", "Name": "Alice"}, {"Email": "b@example.com"}],
        "Bcc": [{"Email": "c@example.com"}], "ReplyTo": {"Email": "help@example.com"},
        "Subject": "Hi", "TextPart": "Hello", "TemplateID": 42, "TemplateLanguage": True,
        "Variables": {"n": 1},
        "Attachments": [{"ContentType": "text/plain", "Filename": "a.txt",
                         "Base64Content": "aGk="}],
        "Headers": {"X-Tag": "t"}, "CustomID": "job-1"}
    minimal = send.build_payload([_out("job-2", "a@example.com", variables={"n": 1},
                                       html="<p>x</p>", headers={}, attachments=None)])
    assert minimal["Messages"][0] == {
        "From": {"Email": "app@example.com", "Name": "App"}, "To": [{"Email": "a@example.com"}],
        "Subject": "Hi", "TextPart": "Hello", "HTMLPart": "<p>x</p>", "CustomID": "job-2"}


def test_200_parses_exact_message_ids(canned: Any) -> None:
    client, app = canned
    app.answers.append((200, {"Content-Type": "application/json"},
                        (FIXTURES / "send_ok.json").read_bytes()))
    response = client.send([_out("order-1001", "alice@example.com"),
                            _out("order-1002", "bob@example.org")])
    first, second = response.results
    assert first.accepted and second.accepted
    (alice,) = first.recipients
    assert alice == send.AcceptedRecipient("to", 0, "alice@example.com", 288230379609003794,
                                           "3f1c2a9e-7b4d-4c1e-9a55-0d2b8e6f4a10")
    assert second.recipients[0].message_id == 288230379609003795
    (req,) = app.requests
    assert req.method == "POST"
    assert req.path == "/v3.1/send"
    assert (req.authorization.username, req.authorization.password) == ("key", "secret")
    assert req.get_json()["Messages"][1]["CustomID"] == "order-1002"


def _rows(*rows: dict) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"Count": len(rows), "Data": list(rows), "Total": len(rows)})
    return 200, {"Content-Type": "application/json"}, body.encode()


def test_the_lookup_asks_for_addresses_and_custom_ids_and_keeps_only_its_own(canned: Any) -> None:
    client, app = canned
    # IDs as Mailjet's reference shows them (strings) and as numbers, both above 2**53.
    app.answers.append(_rows(
        {"ID": "288230379609003794", "UUID": "u-1", "CustomID": "job-1", "ContactAlt": "Ann@Example.com"},
        {"ID": 288230379609003799, "UUID": "u-2", "CustomID": "job-2", "ContactAlt": "bob@example.com"},
        {"ID": 288230379609003795, "CustomID": "job-1", "ContactAlt": "cy@example.com"},
    ))

    found = client.find_by_custom_id("job-1")

    assert found == [send.FoundRecipient("Ann@Example.com", 288230379609003794, "u-1"),
                     send.FoundRecipient("cy@example.com", 288230379609003795, None)]
    (req,) = app.requests
    assert (req.method, req.path) == ("GET", "/v3/REST/message")
    assert req.args.to_dict() == {"CustomID": "job-1", "ShowContactAlt": "true", "ShowCustomID": "true",
                                  "Limit": "1000"}


def test_the_client_keeps_enough_connections_for_lookups_made_several_at_a_time() -> None:
    client = send.MailjetClient("https://api.mailjet.com", "k", "s")
    try:
        adapter = client.session.get_adapter("https://api.mailjet.com/v3/REST/message")
        assert adapter._pool_maxsize == send.POOL_CONNECTIONS >= 8 * 10  # type: ignore[attr-defined]
    finally:
        client.close()


@pytest.mark.parametrize("row", [
    {"ID": 288230379609003794, "ContactAlt": "a@example.com"},  # CustomID not shown: cannot tell whose
    {"ID": 2.8823037960900378e17, "CustomID": "job-1"},  # a float has lost the last digits
    {"CustomID": "job-1", "ContactAlt": "a@example.com"},
    "not a row",
])
def test_a_lookup_row_it_cannot_read_fails_the_lookup(canned: Any, row: Any) -> None:
    client, app = canned
    app.answers.append(_rows(row))

    with pytest.raises(send.SendError) as caught:
        client.find_by_custom_id("job-1")

    assert (caught.value.transient, caught.value.ambiguous) == (True, False)


def test_400_with_messages_is_a_partial_success(canned: Any) -> None:
    client, app = canned
    app.answers.append((400, {"Content-Type": "application/json"},
                        (FIXTURES / "send_partial.json").read_bytes()))
    ok, bad = client.send([_out("order-1001", "alice@example.com"),
                           _out("order-1002", "bob@invalid")]).results
    assert ok.accepted
    assert ok.recipients[0].message_id == 288230379609003794
    assert not bad.accepted
    assert bad.recipients == ()
    assert bad.error_code == "mj-0013"
    assert bad.error_message == '"bob@invalid" is an invalid email address. (To[0].Email)'


@pytest.mark.parametrize(("status", "body", "transient", "ambiguous"), [
    (200, b"<html>oops</html>", True, True),
    (200, b'{"Messages": []}', True, True),
    (400, b'{"ErrorIdentifier": "x", "StatusCode": 400, "ErrorMessage": "Bad"}', False, False),
    (403, b'{"ErrorMessage": "Forbidden"}', False, False),
    (503, b"", True, True),
])
def test_global_failures(canned: Any, status: int, body: bytes, transient: bool,
                         ambiguous: bool) -> None:
    client, app = canned
    app.answers.append((status, {}, body))
    with pytest.raises(send.SendError) as caught:
        client.send([_out("j", "a@example.com")])
    assert (caught.value.transient, caught.value.ambiguous) == (transient, ambiguous)
    assert caught.value.status_code == status


def test_429_is_transient_not_ambiguous(sim: Any) -> None:
    client, base = sim
    _script(base, "429", "429_retry_after")
    with pytest.raises(send.SendError) as plain:
        client.send([_out("j", "a@example.com")])
    with pytest.raises(send.SendError) as with_header:
        client.send([_out("j", "a@example.com")])
    assert (plain.value.transient, plain.value.ambiguous) == (True, False)
    assert plain.value.status_code == 429
    assert plain.value.retry_after is None
    assert str(plain.value) == "Mailjet 429 Too Many Requests"
    assert with_header.value.retry_after == 1.0


def test_retry_after_formats() -> None:
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (send.parse_retry_after(later) or 0) <= 30
    assert send.parse_retry_after("120") == 120.0
    assert send.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert send.parse_retry_after("soon") is None
    assert send.parse_retry_after("-1") is None
    assert send.parse_retry_after(None) is None


def test_500_is_transient_and_ambiguous(sim: Any) -> None:
    client, base = sim
    _script(base, "500", "accept_then_500")
    for _ in range(2):
        with pytest.raises(send.SendError) as caught:
            client.send([_out("job-9", "a@example.com")])
        assert (caught.value.transient, caught.value.ambiguous) == (True, True)
        assert caught.value.status_code == 500
    (row,) = client.find_by_custom_id("job-9")  # only the accept_then_500 call got through
    assert type(row.message_id) is int
    assert row.message_id > 2**53
    assert row.email == "a@example.com"


def test_401_is_permanent_and_hides_credentials(sim: Any) -> None:
    _, base = sim
    client = send.MailjetClient(base, "key", "hunter2", timeout=5)
    try:
        with pytest.raises(send.SendError) as caught:
            client.send([_out("j", "a@example.com")])
    finally:
        client.close()
    assert (caught.value.transient, caught.value.ambiguous) == (False, False)
    assert caught.value.status_code == 401
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(client)


def test_read_timeout_is_ambiguous_and_lookup_finds_it(sim: Any) -> None:
    client, base = sim
    _script(base, "timeout")
    slow = send.MailjetClient(base, "key", "secret", timeout=0.2)
    try:
        with pytest.raises(send.SendError) as caught:
            slow.send([_out("job-t", "a@example.com")])
    finally:
        slow.close()
    assert (caught.value.transient, caught.value.ambiguous) == (True, True)
    assert caught.value.status_code is None
    assert [row.email for row in client.find_by_custom_id("job-t")] == ["a@example.com"]


def test_connection_refused_is_transient_not_ambiguous() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = send.MailjetClient(f"http://127.0.0.1:{port}", "key", "secret", timeout=2)
    try:
        with pytest.raises(send.SendError) as caught:
            client.send([_out("j", "a@example.com")])
    finally:
        client.close()
    assert (caught.value.transient, caught.value.ambiguous) == (True, False)


def test_round_trip_with_simulator(sim: Any) -> None:
    client, _ = sim
    message = _out("job-1", "a@example.com", "b@example.com",
                   cc=[{"email": "c@example.com", "name": "C"}])
    ok, bad = client.send([message, _out("job-2", "bob@invalid")]).results
    assert [(r.kind, r.position, r.email) for r in ok.recipients] == [
        ("to", 0, "a@example.com"), ("to", 1, "b@example.com"), ("cc", 0, "c@example.com")]
    assert len({r.message_id for r in ok.recipients}) == 3
    assert not bad.accepted
    assert bad.error_code == "mj-0013"
    rows = client.find_by_custom_id("job-1")
    assert sorted((row.message_id, row.email, row.message_uuid) for row in rows) == sorted(
        (r.message_id, r.email, r.message_uuid) for r in ok.recipients)
    assert client.find_by_custom_id("job-2") == []


def test_more_than_50_messages_is_refused_before_calling(sim: Any) -> None:
    client, base = sim
    with pytest.raises(ValueError, match="50"):
        client.send([_out(str(i), "a@example.com") for i in range(51)])
    with pytest.raises(ValueError):
        client.send([])
    assert requests.get(f"{base}/_sim/sends", timeout=5).json()["calls"] == 0


def test_connection_dropped_after_sending_is_ambiguous() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def drop_after_reading() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)  # the request reached "Mailjet", which then hangs up

        thread = threading.Thread(target=drop_after_reading, daemon=True)
        thread.start()
        client = send.MailjetClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "k", "s",
                                    timeout=5)
        try:
            with pytest.raises(send.SendError) as caught:
                client.send([_out("j", "a@example.com")])
        finally:
            client.close()
            thread.join()
    assert (caught.value.transient, caught.value.ambiguous) == (True, True)


class _Failing(requests.Session):
    """A session whose every request raises the given exception."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        raise self.exc


@pytest.mark.parametrize(("exc", "ambiguous"), [
    (requests.ConnectTimeout(), False),
    (requests.ReadTimeout(), True),
    (requests.exceptions.ChunkedEncodingError(), True),
])
def test_transport_errors(exc: Exception, ambiguous: bool) -> None:
    with _Failing(exc) as session:
        client = send.MailjetClient("http://mailjet.test", "k", "s", session=session)
        with pytest.raises(send.SendError) as caught:
            client.send([_out("j", "a@example.com")])
    assert caught.value.transient is True
    assert caught.value.ambiguous is ambiguous
    assert caught.value.status_code is None
