"""Listings that may read the replica (/logs, /stats, the dashboard's lists; /activity when it comes): one call.

`listing(work)` runs `work(conn)` through the app's ReadRouter (services/read_replica.py) and, when a replica
is configured, says in the response header X-Mailer-Read-Source which server answered (replica or primary).
Everything that must read its own writes (/status, sending, auth, idempotency, webhooks) keeps using the
primary's pool directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import flask
import psycopg

from mailer.services import read_replica

T = TypeVar("T")
EXTENSION = "mailer.reads"
HEADER = "X-Mailer-Read-Source"


def init_app(app: flask.Flask) -> None:
    """Give the app its ReadRouter over its primary pool (and the replica's, when configured)."""
    app.extensions[EXTENSION] = read_replica.ReadRouter(app.extensions["mailer.settings"],
                                                        app.extensions["mailer.pool"])
    app.after_request(_source_header)


def router() -> read_replica.ReadRouter:
    """The current app's ReadRouter."""
    return flask.current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def listing(work: Callable[[psycopg.Connection], T], *, snapshot: bool = False) -> T:
    """`work(conn)` on the replica when it may serve, else on the primary (see ReadRouter.read)."""
    reads = router()
    result, source = reads.read(work, snapshot=snapshot)
    if reads.configured:
        flask.g.read_source = source
    return result


def _source_header(response: flask.Response) -> flask.Response:
    source = flask.g.get("read_source")
    if source is not None:
        response.headers[HEADER] = source
    return response
