"""The chosen web stack's floor: gunicorn + Flask answering a POST with one single-row INSERT commit.

`bench/run.py` serves it with mailer's own gunicorn settings next to mailer's web, so measurement 1 can say
how much of a request's cost is the stack and the commit that any design on it pays.
"""

from __future__ import annotations

import json
import os
import uuid

import flask
import psycopg_pool

from bench.loadgen import RAW_INSERT

app = flask.Flask(__name__)
_THREADS = int(os.environ.get("MAILER_WEB_THREADS", "4"))  # gunicorn.conf.py's threads per process
_pool = psycopg_pool.ConnectionPool(
    os.environ["DATABASE_URL"], min_size=_THREADS, max_size=_THREADS,
    kwargs={"autocommit": True}, open=True,
)


@app.get("/ready")
def ready() -> str:
    """Up: the benchmark starts measuring."""
    return "ok"


@app.post("/insert")
def insert() -> tuple[flask.Response, int]:
    """Read the JSON body, store one row in its own transaction, answer 202 with its id."""
    payload = flask.request.get_json()
    job_id = uuid.uuid4()
    with _pool.connection() as conn:
        conn.execute(RAW_INSERT, (job_id, json.dumps(payload), "{}"))
    return flask.jsonify({"id": str(job_id), "status": "queued"}), 202
