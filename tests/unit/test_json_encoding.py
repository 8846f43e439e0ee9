"""orjson writes log lines, jsonb parameters and API answers as the standard library did (BENCHMARKS.md,
sixth round): the same values, and the same text but for the spelling of some floats (0.00001, not 1e-05) and
non-ASCII text in answers as UTF-8 rather than \\u escapes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import uuid

import flask
import pytest

from mailer import logging_json
from mailer.api.json_provider import FastJSONProvider
from mailer.store import _run


@dataclasses.dataclass
class Point:
    x: int


WHEN = dt.datetime(2026, 11, 22, 16, 5, 7, 123456, tzinfo=dt.UTC)
VALUES = {
    "aware datetime": {"at": WHEN},
    "whole second": {"at": WHEN.replace(microsecond=0)},
    "naive datetime": {"at": WHEN.replace(tzinfo=None)},
    "date": {"day": WHEN.date()},
    "uuid": {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    "non-ASCII and escapes": {"message": 'Zoë "quoted" \\ back\nslash\ttab \u2028 \x01'},
    "integer keys": {1: "one", "nested": {"list": [1, 2.5, None, True]}},
    "tuple": {"pair": (1, "two")},
    "floats": {"small": 1e-5, "big": 1e16, "plain": 0.1},
    "MessageID above 2^53": {"message_id": 288230376151711744},
    "integer beyond 64 bits": {"n": 10**30},
    "lone surrogate": {"s": "\ud800"},
}


@pytest.mark.parametrize("entry", VALUES.values(), ids=VALUES.keys())
def test_a_log_line_reads_as_the_standard_library_wrote_it(entry):
    line = logging_json._encode(entry)
    assert json.loads(line) == json.loads(logging_json._encode_stdlib(entry))
    if "small" not in entry:  # floats: the same values, spelt otherwise (0.00001, not 1e-05)
        assert line == logging_json._encode_stdlib(entry)


def test_a_set_in_a_log_line_is_a_list():
    assert json.loads(logging_json._encode({"kinds": {"to"}})) == {"kinds": ["to"]}


def test_a_dataclass_in_a_log_line_is_its_text_as_before():
    entry = {"point": Point(3)}
    assert logging_json._encode(entry) == logging_json._encode_stdlib(entry) == '{"point":"Point(x=3)"}'


@pytest.mark.parametrize("value", [v for k, v in VALUES.items() if "date" not in k and k != "lone surrogate"],
                         ids=[k for k in VALUES if "date" not in k and k != "lone surrogate"])
def test_a_jsonb_parameter_holds_what_the_standard_library_wrote(value):
    written = _run._dumps(value)
    expected = json.dumps(value, default=_run._default)
    assert json.loads(written) == json.loads(expected)


def test_a_jsonb_parameter_writes_datetimes_and_uuids_as_before():
    value = {"at": WHEN, "id": uuid.UUID(int=7)}
    assert json.loads(_run._dumps(value)) == json.loads(json.dumps(value, default=_run._default))


@pytest.mark.parametrize("value", [WHEN.date(), WHEN.time(), Point(3)], ids=["date", "time", "dataclass"])
def test_a_jsonb_parameter_refuses_what_it_refused_before(value):
    with pytest.raises(TypeError):
        _run._dumps({"v": value})


@pytest.mark.parametrize("body", [
    {"id": "5f0c", "status": "queued"},
    {"at": WHEN, "price": decimal.Decimal("1.10"), "id": uuid.UUID(int=7), "point": Point(3)},
    {"n": 10**30, "text": "Zoë"},
    {"text": "Zoë \u2028 \x01", "half": 0.5},
    [1, "two", None],
], ids=["answer", "flask's own types", "big integer", "non-ASCII", "list"])
def test_an_answer_is_the_text_flask_would_have_written_with_non_ascii_as_utf8(body):
    app = flask.Flask(__name__)
    plain = app.json
    plain.sort_keys = False  # type: ignore[attr-defined]
    plain.ensure_ascii = False  # type: ignore[attr-defined]
    fast = FastJSONProvider(app)
    fast.sort_keys = False
    with app.app_context():
        answer, expected = fast.response(body), plain.response(body)
    assert answer.mimetype == "application/json"
    assert answer.get_data() == expected.get_data()
