"""Tests for the Mailjet simulator, served on 127.0.0.1 from a thread."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from mailer.mailjet import simulator

AUTH = ("key", "secret")


class Receiver:
    """A tiny events endpoint recording each POST; answers from `statuses`, then 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[Any, Any]] = []
        self.statuses: deque[int] = deque()
        self.lock = threading.Lock()
        self.delay_s = 0.0  # how long each answer takes
        self.open = self.most_open = 0  # POSTs being answered now, and the most at once

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        req = Request(environ)
        auth = req.authorization
        with self.lock:
            self.posts.append((json.loads(req.get_data()), auth and (auth.username, auth.password)))
            status = self.statuses.popleft() if self.statuses else 200
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        time.sleep(self.delay_s)
        with self.lock:
            self.open -= 1
        return Response("ok", status)(environ, start_response)

    def events(self) -> list[dict]:
        with self.lock:
            bodies = [body for body, _ in self.posts]
        return [e for b in bodies for e in (b if isinstance(b, list) else [b])]


def _serve(app: Any) -> Iterator[tuple[str, Any]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[tuple[str, Receiver]]:
    yield from _serve(Receiver())


@contextlib.contextmanager
def _simulator(**config: Any) -> Iterator[str]:
    server, thread = simulator.start_in_thread("127.0.0.1", 0, simulator.SimulatorConfig(*AUTH, **config))
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def sim() -> Iterator[str]:
    with _simulator(timeout_s=0.5) as base:
        yield base


def _msg(*to: str, custom_id: str = "c1", **extra: Any) -> dict:
    return {"From": {"Email": "app@example.com"}, "To": [{"Email": t} for t in to],
            "Subject": "Hi", "TextPart": "Hello", "CustomID": custom_id, **extra}


def _send(base: str, *messages: dict, auth: Any = AUTH) -> requests.Response:
    return requests.post(f"{base}/v3.1/send", json={"Messages": list(messages)}, auth=auth,
                         timeout=5)


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_message_ids_are_unique_exact_ints_above_2_53(sim: str) -> None:
    response = _send(sim, _msg("a@example.com", "b@example.com", Cc=[{"Email": "c@example.com"}]),
                     _msg("d@example.com", custom_id="c2"))
    assert response.status_code == 200
    messages = response.json()["Messages"]
    ids = [r["MessageID"] for m in messages for f in ("To", "Cc") for r in m[f]]
    assert len(ids) == 4
    assert len(set(ids)) == 4
    assert all(type(i) is int and i > 2**53 for i in ids)
    assert messages[0]["CustomID"] == "c1"
    assert messages[0]["To"][1]["MessageHref"].endswith(f"/v3/REST/message/{ids[1]}")
    assert uuid.UUID(messages[0]["To"][0]["MessageUUID"])


def test_the_first_message_id_can_be_chosen_at_start() -> None:
    first = simulator.restart_safe_first_message_id()
    with _simulator(timeout_s=0.5, first_message_id=first) as base:
        response = _send(base, _msg("a@example.com", "b@example.com"))
    assert [r["MessageID"] for r in response.json()["Messages"][0]["To"]] == [first, first + 1]


def test_a_restarted_simulator_starts_above_every_earlier_message_id() -> None:
    # mailer dev keeps its database across runs: a simulator started again must not reuse a MessageID.
    earlier = simulator.restart_safe_first_message_id()
    time.sleep(0.002)
    later = simulator.restart_safe_first_message_id()
    assert later >= earlier + 1_000  # room for a thousand sends per millisecond the earlier one ran
    assert 2**53 < earlier < later < 2**63 - 2**60  # a BIGINT, with centuries of room to count up


def test_partial_failure_is_http_400_with_mailjet_shape(sim: str) -> None:
    response = _send(sim, _msg("alice@example.com"), _msg("bob@invalid", custom_id="c2"),
                     _msg("ok@example.com", "carol@mail.example.invalid", custom_id="c3"))
    assert response.status_code == 400
    ok, bad, bad2 = response.json()["Messages"]
    assert ok["Status"] == "success"
    assert ok["To"][0]["Email"] == "alice@example.com"
    assert set(bad) == {"Errors", "Status"}
    assert bad["Status"] == "error"
    (error,) = bad["Errors"]
    assert error["ErrorCode"] == "mj-0013"
    assert error["StatusCode"] == 400
    assert error["ErrorMessage"] == '"bob@invalid" is an invalid email address.'
    assert error["ErrorRelatedTo"] == ["To[0].Email"]
    assert uuid.UUID(error["ErrorIdentifier"])
    assert bad2["Errors"][0]["ErrorRelatedTo"] == ["To[1].Email"]
    sends = requests.get(f"{sim}/_sim/sends", timeout=5).json()
    assert sends["by_custom_id"] == {"c1": 1}


def test_forbidden_header_is_send_0011(sim: str) -> None:
    response = _send(sim, _msg("a@example.com", Headers={"message-id": "<x@y>", "X-Ok": "1"}))
    assert response.status_code == 400
    (error,) = response.json()["Messages"][0]["Errors"]
    assert error["ErrorCode"] == "send-0011"
    assert error["ErrorRelatedTo"] == ["Headers.message-id"]


def test_global_errors_have_no_messages(sim: str) -> None:
    too_many = _send(sim, *[_msg("a@example.com")] * 51)
    malformed = requests.post(f"{sim}/v3.1/send", data=b"{nope", auth=AUTH, timeout=5)
    for response in (too_many, malformed):
        assert response.status_code == 400
        body = response.json()
        assert "Messages" not in body
        assert {"ErrorIdentifier", "ErrorCode", "ErrorMessage", "StatusCode"} <= set(body)


@pytest.mark.parametrize("extra", [
    {"Headers": {"X-Order": 1001}}, {"Variables": ["a"]}, {"Subject": 7}, {"TemplateID": "12"},
    {"Attachments": [{"ContentType": "text/plain", "Filename": "a.txt", "Base64Content": None}]},
])
def test_a_mistyped_property_refuses_the_whole_call_and_sends_nothing(sim: str, extra: dict) -> None:
    response = _send(sim, _msg("a@example.com", custom_id="good"), _msg("b@example.com", custom_id="bad", **extra))
    assert response.status_code == 400
    body = response.json()
    assert "Messages" not in body
    assert body["ErrorCode"] == "mj-0002"
    assert requests.get(f"{sim}/_sim/sends", timeout=5).json()["by_custom_id"] == {}
    assert _send(sim, _msg("a@example.com", custom_id="good")).status_code == 200


def test_api_calls_need_basic_auth(sim: str) -> None:
    response = _send(sim, _msg("a@example.com"), auth=("key", "wrong"))
    assert response.status_code == 401
    assert response.json()["StatusCode"] == 401
    assert requests.get(f"{sim}/v3/REST/message", timeout=5).status_code == 401
    assert requests.get(f"{sim}/_sim/sends", timeout=5).json()["by_custom_id"] == {}


def test_scripted_429_is_html_and_retry_after_only_when_asked(sim: str) -> None:
    requests.post(f"{sim}/_sim/script", json={"responses": ["429", "429_retry_after"]}, timeout=5)
    plain, with_header, normal = (_send(sim, _msg("a@example.com")) for _ in range(3))
    assert plain.status_code == 429
    assert plain.headers["Content-Type"].startswith("text/html")
    assert "Too Many Requests" in plain.text
    assert plain.text.lstrip().startswith("<html>")
    assert "Retry-After" not in plain.headers
    assert with_header.status_code == 429
    assert with_header.headers["Retry-After"] == "1"
    assert normal.status_code == 200
    sends = requests.get(f"{sim}/_sim/sends", timeout=5).json()
    assert sends["calls"] == 3
    assert sends["by_custom_id"] == {"c1": 1}


def test_scripted_500_and_accept_then_500(sim: str) -> None:
    script = {"responses": ["500", "accept_then_500"]}
    assert requests.post(f"{sim}/_sim/script", json=script, timeout=5).status_code == 200
    first = _send(sim, _msg("a@example.com", custom_id="lost"))
    second = _send(sim, _msg("a@example.com", custom_id="kept"))
    assert (first.status_code, second.status_code) == (500, 500)
    assert first.json()["ErrorMessage"] == "Internal Server Error"
    sends = requests.get(f"{sim}/_sim/sends", timeout=5).json()
    assert sends["by_custom_id"] == {"kept": 1}
    bad = requests.post(f"{sim}/_sim/script", json={"responses": ["explode"]}, timeout=5)
    assert bad.status_code == 400


def test_sends_and_rest_lookup_by_custom_id(sim: str) -> None:
    first = _send(sim, _msg("a@example.com", "b@example.com", custom_id="job-1")).json()
    _send(sim, _msg("c@example.com", custom_id="job-1"), _msg("d@example.com", custom_id="job-2"))
    sends = requests.get(f"{sim}/_sim/sends", timeout=5).json()
    assert sends["calls"] == 2
    assert sends["by_custom_id"] == {"job-1": 2, "job-2": 1}
    ids = [r["MessageID"] for r in first["Messages"][0]["To"]]
    assert sends["messages"][0]["recipients"] == [
        {"email": "a@example.com", "message_id": str(ids[0])},
        {"email": "b@example.com", "message_id": str(ids[1])}]
    lookup = requests.get(f"{sim}/v3/REST/message", params={"CustomID": "job-1", "ShowCustomID": "true"},
                          auth=AUTH, timeout=5).json()
    assert lookup["Count"] == lookup["Total"] == 3
    assert [row["ID"] for row in lookup["Data"]][:2] == ids
    assert {row["CustomID"] for row in lookup["Data"]} == {"job-1"}
    assert {row["Status"] for row in lookup["Data"]} == {"sent"}
    none = requests.get(f"{sim}/v3/REST/message", params={"CustomID": "nope"}, auth=AUTH,
                        timeout=5).json()
    assert none == {"Count": 0, "Data": [], "Total": 0}
    requests.post(f"{sim}/_sim/reset", timeout=5)
    assert requests.get(f"{sim}/_sim/sends", timeout=5).json()["calls"] == 0


def _lookup(sim: str, **params: Any) -> dict:
    response = requests.get(f"{sim}/v3/REST/message", params=params, auth=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_rest_lookup_shows_the_address_and_custom_id_only_when_asked(sim: str) -> None:
    _send(sim, _msg("a@example.com", "b@example.com", custom_id="job-1"), _msg("c@example.com", custom_id="job-2"))

    bare = _lookup(sim, CustomID="job-1")["Data"]
    assert len(bare) == 2
    assert not any("ContactAlt" in row or "CustomID" in row for row in bare)
    assert all(type(row["ID"]) is int and row["UUID"] for row in bare)
    shown = _lookup(sim, CustomID="job-1", ShowContactAlt="true", ShowCustomID="true")["Data"]
    assert [(row["ContactAlt"], row["CustomID"]) for row in shown] == [
        ("a@example.com", "job-1"), ("b@example.com", "job-1")]
    assert [row["ID"] for row in shown] == [row["ID"] for row in bare]
    only_address = _lookup(sim, CustomID="job-1", ShowContactAlt="true", ShowCustomID="false")["Data"]
    assert [("ContactAlt" in row, "CustomID" in row) for row in only_address] == [(True, False)] * 2


def test_the_rest_lookup_pages_ten_rows_by_default(sim: str) -> None:
    _send(sim, _msg(*(f"r{i}@example.com" for i in range(12)), custom_id="job-1"))

    first = _lookup(sim, CustomID="job-1")
    assert (first["Count"], first["Total"], len(first["Data"])) == (10, 12, 10)
    rest = _lookup(sim, CustomID="job-1", Offset="10", Limit="1000")
    assert (rest["Count"], rest["Total"]) == (2, 12)
    assert {row["ID"] for row in rest["Data"]}.isdisjoint(row["ID"] for row in first["Data"])
    assert len(_lookup(sim, CustomID="job-1", Limit="1000")["Data"]) == 12


def test_the_rest_lookup_takes_the_latency_and_can_ignore_its_filter(sim: str) -> None:
    _send(sim, _msg("a@example.com", custom_id="job-1"), _msg("b@example.com", custom_id="job-2"))
    requests.post(f"{sim}/_sim/config", json={"latency_s": 0.3, "lookup_ignores_custom_id": True},
                  timeout=5).raise_for_status()

    started = time.monotonic()
    rows = _lookup(sim, CustomID="job-1", ShowCustomID="true")["Data"]
    assert time.monotonic() - started >= 0.3
    assert [row["CustomID"] for row in rows] == ["job-1", "job-2"]  # the fault: every message


def test_config_changes_at_run_time(sim: str) -> None:
    changed = requests.post(f"{sim}/_sim/config", json={"latency_s": 0.3}, timeout=5)
    assert changed.json()["latency_s"] == 0.3
    assert "api_secret" not in changed.json()
    started = time.monotonic()
    _send(sim, _msg("a@example.com"))
    assert time.monotonic() - started >= 0.3


def test_grouped_events_are_posted_with_auth_in_url(sim: str, receiver: Any) -> None:
    url, recv = receiver
    events_url = url.replace("http://", "http://hook:pw@") + "/events"
    requests.post(f"{sim}/_sim/config", json={"events_url": events_url, "event_delay_s": 0,
                                              "open_delay_s": 0.05}, timeout=5)
    sent = _send(sim, _msg("alice@example.com", "bounce@example.com", "softbounce@example.com",
                           "blocked@example.com", "click@example.com", EventPayload="p1"))
    ids = {r["Email"]: r["MessageID"] for r in sent.json()["Messages"][0]["To"]}
    _wait_for(lambda: len(recv.events()) == 8)
    assert all(isinstance(body, list) for body, _ in recv.posts)
    assert {auth for _, auth in recv.posts} == {("hook", "pw")}
    seen = sorted((e["email"].split("@")[0], e["event"]) for e in recv.events())
    assert seen == [("alice", "open"), ("alice", "sent"), ("blocked", "blocked"),
                    ("bounce", "bounce"), ("click", "click"), ("click", "open"),
                    ("click", "sent"), ("softbounce", "bounce")]
    by_key = {(e["email"], e["event"]): e for e in recv.events()}
    sent_event = by_key["alice@example.com", "sent"]
    assert sent_event["MessageID"] == ids["alice@example.com"]
    assert sent_event["mj_message_id"] == str(ids["alice@example.com"])
    assert sent_event["CustomID"] == "c1"
    assert sent_event["Payload"] == "p1"
    assert {"time", "Message_GUID", "mj_campaign_id", "mj_contact_id", "customcampaign",
            "smtp_reply"} <= set(sent_event)
    assert by_key["bounce@example.com", "bounce"]["hard_bounce"] is True
    assert by_key["softbounce@example.com", "bounce"]["hard_bounce"] is False


def test_single_events_with_auth_and_retry(sim: str, receiver: Any) -> None:
    url, recv = receiver
    recv.statuses.extend([500])
    requests.post(f"{sim}/_sim/config", json={
        "events_url": f"{url}/events", "events_auth": "u:p", "grouped_events": False,
        "event_delay_s": 0, "open_delay_s": 0.05}, timeout=5)
    _send(sim, _msg("spam@example.com", "unsub@example.com"))
    _wait_for(lambda: len(recv.events()) == 6)  # 5 events, the first posted twice
    assert all(isinstance(body, dict) for body, _ in recv.posts)
    assert {auth for _, auth in recv.posts} == {("u", "p")}
    first, retried = recv.posts[0][0], [b for b, _ in recv.posts[1:] if b == recv.posts[0][0]]
    assert retried == [first]
    names = sorted({(e["email"], e["event"]) for e in recv.events()})
    assert names == [("spam@example.com", "sent"), ("spam@example.com", "spam"),
                     ("unsub@example.com", "open"), ("unsub@example.com", "sent"),
                     ("unsub@example.com", "unsub")]


def test_single_events_go_out_over_several_connections_at_once(sim: str, receiver: Any) -> None:
    # One POST at a time cannot keep up with a few hundred emails a second (the steady benchmark, bench/steady.py).
    url, recv = receiver
    recv.delay_s = 0.2
    requests.post(f"{sim}/_sim/config", json={"events_url": f"{url}/events", "grouped_events": False,
                                               "event_delay_s": 0, "open_delay_s": 0}, timeout=5)
    addresses = [f"user{i}@example.com" for i in range(2 * simulator.EVENT_POSTERS)]
    started = time.monotonic()
    _send(sim, _msg(*addresses))
    _wait_for(lambda: len(recv.events()) == 2 * len(addresses))  # sent + open each
    elapsed = time.monotonic() - started
    assert recv.most_open == simulator.EVENT_POSTERS  # never more, and not one at a time
    assert elapsed < 2 * len(addresses) * recv.delay_s / 2  # one at a time would take 6.4 s
    assert sorted((e["email"], e["event"]) for e in recv.events()) == sorted(
        (a, name) for a in addresses for name in ("sent", "open"))
    _wait_for(lambda: requests.get(f"{sim}/_sim/sends", params={"summary": 1}, timeout=5).json()
              ["pending_events"] == 0)


def test_module_runs_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailer.mailjet.simulator", "--port", "0", "--api-key", "k",
         "--api-secret", "s"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("mailjet simulator listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1]
        assert _send(base, _msg("a@example.com"), auth=("k", "s")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("changes", [{"colour": "red"}, {"grouped_events": "false"},
                                     {"latency_s": "1"}, {"latency_s": -1}, ["latency_s"]])
def test_bad_config_changes_are_refused(sim: str, changes: Any) -> None:
    response = requests.post(f"{sim}/_sim/config", json=changes, timeout=5)
    assert response.status_code == 400
    current = requests.get(f"{sim}/_sim/config", timeout=5).json()
    assert (current["latency_s"], current["grouped_events"]) == (0.0, True)
