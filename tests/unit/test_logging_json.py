"""The JSON log formatter: one object per line, the request id of the work, secrets masked."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

import pytest

from mailer import logging_json
from mailer.config import Settings


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("mailer.test", logging.INFO, __file__, 1, message, args or ("world",), None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def formatted(made: logging.LogRecord) -> dict:
    line = logging_json.JsonFormatter().format(made)
    assert "\n" not in line
    return json.loads(line)


def test_a_line_has_time_level_logger_message_and_the_extra_fields():
    entry = formatted(record(job_id="j1", app_id=3))
    assert entry["level"] == "INFO"
    assert entry["logger"] == "mailer.test"
    assert entry["message"] == "hello world"
    assert entry["time"].endswith("+00:00")
    assert entry["job_id"] == "j1" and entry["app_id"] == 3
    assert "args" not in entry and "msg" not in entry and "request_id" not in entry


@pytest.mark.parametrize("created", [0.0, 1.0005, 1763800000.9995, 1763800000.9999996, 1763800000.123456,
                                     482848470.03099984, 4102444799.999])
def test_the_time_is_what_isoformat_gives_to_the_millisecond(created):
    made = record()
    made.created = created
    expected = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
    assert formatted(made)["time"] == expected


def test_the_request_id_of_the_context_is_added_unless_the_line_names_one():
    with logging_json.request_context("req-1"):
        assert formatted(record())["request_id"] == "req-1"
        assert formatted(record(request_id="job-req"))["request_id"] == "job-req"
    assert "request_id" not in formatted(record())


def test_exceptions_are_one_field_of_the_same_line():
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = formatted(made)
    assert "ValueError: boom" in entry["exception"]


def test_values_that_are_not_json_become_text():
    entry = formatted(record(when={1, 2}, thing=object()))
    assert sorted(entry["when"]) == [1, 2]
    assert entry["thing"].startswith("<object")


def test_configured_secrets_are_masked_wherever_they_appear():
    settings = Settings(
        database_url="postgresql://mailer:db-pass-0123@localhost/mailer", events_auth="mailjet:evt-pass-0123",
        mailjet_api_secret="mj-secret-0123", operator_token="op-token-0123456789", secret_key="cookie-key-0123",
        direct_database_url="host=db user=mailer password=direct-pass-0123",
    )
    logging_json.redact(logging_json.secrets_of(settings))
    entry = formatted(record("%s", "db-pass-0123 evt-pass-0123 mj-secret-0123 op-token-0123456789 cookie-key-0123 "
                             "direct-pass-0123", detail='say "mj-secret-0123"'))
    assert entry["message"] == " ".join([logging_json.REDACTED] * 6)
    assert entry["detail"] == f'say "{logging_json.REDACTED}"'


@pytest.mark.parametrize(("given", "valid"), [
    ("abc-123_x.y", True), ("a" * 128, True), ("a" * 129, False), ("", False), (None, False),
    ("has space", False), ("semi;colon", False), ("new\nline", False), ("ünï", False),
])
def test_request_ids_callers_may_choose(given, valid):
    assert (logging_json.valid_request_id(given) is not None) is valid


def test_fresh_request_ids_are_valid_and_distinct():
    ids = {logging_json.new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(logging_json.valid_request_id(value) for value in ids)


def test_gunicorn_config_sends_its_lines_through_the_same_formatter():
    config = logging_json.gunicorn_logconfig()
    assert config["formatters"]["json"]["()"] == "mailer.logging_json.JsonFormatter"
    assert config["loggers"]["gunicorn.access"]["propagate"] is False
    assert config["loggers"]["gunicorn.error"]["handlers"] == []


def test_webhook_errors_are_logged_without_the_subscribers_url():
    from mailer.services.webhook_delivery import without_url

    url = "https://hooks.example.com/in/abc?token=s3cr3t"
    error = ("ConnectionError: HTTPSConnectionPool(host='hooks.example.com', port=443): Max retries exceeded "
             "with url: /in/abc?token=s3cr3t")
    assert "s3cr3t" not in str(without_url(error, url)) and "/in/abc" not in str(without_url(error, url))
    assert without_url(f"refused: the URL {url} is private", url) == "refused: the URL [url] is private"
    assert without_url("HTTP 500: oops", "http://h/") == "HTTP 500: oops"
    assert without_url(None, url) is None
