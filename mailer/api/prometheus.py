"""GET /metrics: Prometheus text format (no auth, like the probes: keep it off the public internet)."""

from __future__ import annotations

import flask

from mailer import metrics
from mailer.api import apidoc

bp = flask.Blueprint("metrics", __name__)
SCRAPE = "mailer.metrics.scrape"


@bp.record_once
def _setup(state: flask.blueprints.BlueprintSetupState) -> None:
    # One per app (so per process), made before any request: its gauges' last reading is shared by every scrape.
    extensions = state.app.extensions
    extensions[SCRAPE] = metrics.Scrape(extensions["mailer.pool"], extensions["mailer.settings"].metrics_db_interval_s)


@bp.get("/metrics")
@apidoc.operation(responses={200: apidoc.Content("text/plain")}, auth="none", database=False)
def scrape() -> flask.Response:
    """Prometheus metrics in the text exposition format.

    Counters of every process (with PROMETHEUS_MULTIPROC_DIR), and gauges read from the database at most
    once per MAILER_METRICS_DB_INTERVAL_S by each web process (`mailer_metrics_database_age_seconds` says
    how long ago); when the database does not answer, `mailer_metrics_database_up` is 0 and the gauges are
    left out. Meant for the operators' Prometheus: do not expose it publicly.
    """
    body = metrics.exposition(flask.current_app.extensions[SCRAPE])
    return flask.Response(body, content_type=metrics.CONTENT_TYPE)
