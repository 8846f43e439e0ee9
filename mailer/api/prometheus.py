"""GET /metrics: Prometheus text format (no auth, like the probes: keep it off the public internet)."""

from __future__ import annotations

import flask

from mailer import metrics
from mailer.api import apidoc

bp = flask.Blueprint("metrics", __name__)


@bp.get("/metrics")
@apidoc.operation(responses={200: apidoc.Content("text/plain")}, auth="none", database=False)
def scrape() -> flask.Response:
    """Prometheus metrics in the text exposition format.

    Counters of every process (with PROMETHEUS_MULTIPROC_DIR), and gauges read from the database at the
    scrape; when the database does not answer, `mailer_metrics_database_up` is 0 and the gauges are left
    out. Meant for the operators' Prometheus: do not expose it publicly.
    """
    body = metrics.exposition(flask.current_app.extensions["mailer.pool"])
    return flask.Response(body, content_type=metrics.CONTENT_TYPE)
