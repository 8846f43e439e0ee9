"""HTTP API: blueprints, schemas, and the one place errors become responses."""

from __future__ import annotations

import flask

from mailer.api import (
    activity,
    errors,
    events,
    health,
    logs,
    openapi,
    prometheus,
    queue,
    reads,
    schedules,
    status,
    suppressions,
    templates,
    unsubscribe,
    webhooks,
)


def init_app(app: flask.Flask) -> None:
    """Register every blueprint and the error handlers."""
    errors.init_app(app)
    reads.init_app(app)
    for blueprint in (
        health.bp, queue.bp, status.bp, events.bp, suppressions.bp, schedules.bp, templates.bp, webhooks.bp, logs.bp,
        activity.bp, unsubscribe.bp, openapi.bp, prometheus.bp,
    ):
        app.register_blueprint(blueprint)
