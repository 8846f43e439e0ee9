"""/webhooks: the app's outbound webhook endpoints, their deliveries, replays and secret rotation."""

from __future__ import annotations

import uuid
from typing import Any

import flask
from marshmallow import Schema

from mailer import db
from mailer.api import apidoc, auth, body, replay_schemas, responses, schemas
from mailer.api import errors as api_errors
from mailer.config import Settings
from mailer.domain import errors
from mailer.services import webhook_replays, webhooks

bp = flask.Blueprint("webhooks", __name__)
bp.before_request(auth.require_app_key)

_ID = {"endpoint_id": apidoc.UUID}


def _load(schema: Schema, data: Any, what: str) -> dict[str, Any]:
    return api_errors.load_or_422(schema, data, f"the {what} is not valid")


def _endpoint_id(raw: str) -> uuid.UUID:
    return api_errors.id_or_404(raw, "webhook")


def _pool() -> Any:
    return flask.current_app.extensions["mailer.pool"]


def _settings() -> Settings:
    return flask.current_app.extensions["mailer.settings"]  # type: ignore[no-any-return]


def _with_secret(answer: dict[str, Any], status: int) -> tuple[flask.Response, int]:
    response = flask.jsonify(answer)
    response.headers["Cache-Control"] = "no-store"  # the secret is shown once; keep it out of caches
    return response, status


@bp.post("/webhooks")
@apidoc.operation(body=schemas.WebhookSchema, responses={201: responses.WebhookWithSecretSchema}, errors=(409,))
def create_webhook() -> tuple[flask.Response, int]:
    """Register an endpoint: 201 with its secret, shown this once."""
    loaded = _load(schemas.WebhookSchema(), body.json_body(), "request")
    with db.connection(_pool()) as conn:
        created = webhooks.create(
            conn, app_id=auth.current_app_id(), url=loaded["url"], events=loaded["events"],
            settings=_settings(),
        )
    return _with_secret(created, 201)


@bp.get("/webhooks")
@apidoc.operation(responses={200: responses.WebhookListSchema})
def list_webhooks() -> flask.Response:
    """The app's endpoints (without secrets)."""
    with db.connection(_pool()) as conn:
        items = webhooks.list_endpoints(conn, app_id=auth.current_app_id())
    return flask.jsonify({"items": items})


@bp.get("/webhooks/<endpoint_id>")
@apidoc.operation(responses={200: responses.WebhookEndpointSchema}, path=_ID, errors=(404,))
def get_webhook(endpoint_id: str) -> flask.Response:
    """One endpoint (without its secret)."""
    with db.connection(_pool()) as conn:
        return flask.jsonify(webhooks.get(conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id)))


@bp.patch("/webhooks/<endpoint_id>")
@apidoc.operation(
    body=schemas.WebhookPatchSchema, responses={200: responses.WebhookEndpointSchema}, path=_ID, errors=(404, 409)
)
def update_webhook(endpoint_id: str) -> flask.Response:
    """Change url, events or enabled (true clears a disabled state)."""
    loaded = _load(schemas.WebhookPatchSchema(), body.json_body(), "request")
    with db.connection(_pool()) as conn:
        updated = webhooks.update(
            conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id), url=loaded.get("url"),
            events=loaded.get("events"), enabled=loaded.get("enabled"), settings=_settings(),
        )
    return flask.jsonify(updated)


@bp.delete("/webhooks/<endpoint_id>")
@apidoc.operation(responses={204: None}, path=_ID, errors=(404,))
def delete_webhook(endpoint_id: str) -> flask.Response:
    """Delete an endpoint and its deliveries: 204."""
    with db.connection(_pool()) as conn:
        webhooks.delete(conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id))
    return flask.Response(status=204)


@bp.post("/webhooks/<endpoint_id>/rotate-secret")
@apidoc.operation(responses={200: responses.WebhookWithSecretSchema}, path=_ID, errors=(404,))
def rotate_webhook_secret(endpoint_id: str) -> tuple[flask.Response, int]:
    """A new secret, shown this once; the old one keeps signing beside it for 24 h."""
    with db.connection(_pool()) as conn:
        rotated = webhooks.rotate_secret(
            conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id), settings=_settings()
        )
    return _with_secret(rotated, 200)


@bp.get("/webhooks/<endpoint_id>/deliveries")
@apidoc.operation(
    query=schemas.WebhookDeliveryListArgs, responses={200: responses.WebhookDeliveryPageSchema}, path=_ID,
    errors=(404,),
)
def list_webhook_deliveries(endpoint_id: str) -> flask.Response:
    """The endpoint's deliveries, newest first, each with every attempt; `next_cursor` pages on."""
    args = flask.request.args
    repeated = sorted(key for key in args if len(args.getlist(key)) > 1)
    if repeated:
        raise errors.ValidationFailed(
            "a query parameter is given more than once", {key: ["is given more than once"] for key in repeated}
        )
    query = _load(schemas.WebhookDeliveryListArgs(), args.to_dict(), "query")
    with db.connection(_pool()) as conn:
        page = webhooks.list_deliveries(
            conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id), limit=query["limit"],
            cursor=query["cursor"], status=query["status"],
        )
    return flask.jsonify(page)


@bp.post("/webhooks/<endpoint_id>/deliveries/<int:delivery_id>/replay")
@apidoc.operation(responses={202: responses.ReplayAnswerSchema}, path=_ID, errors=(404, 409))
def replay_webhook_delivery(endpoint_id: str, delivery_id: int) -> tuple[flask.Response, int]:
    """Send one delivery again now (same webhook-id and body): 202."""
    with db.connection(_pool()) as conn:
        replayed = webhooks.replay(
            conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id), delivery_id=delivery_id
        )
    return flask.jsonify(replayed), 202


@bp.post("/webhooks/<endpoint_id>/replay")
@apidoc.operation(
    body=replay_schemas.ReplaySchema, responses={202: replay_schemas.WebhookReplaySchema}, path=_ID,
    errors=(404, 409),
)
def replay_webhook_window(endpoint_id: str) -> tuple[flask.Response, int]:
    """Deliver every matching event of [since, until) again, with its original webhook-id, in the background:
    202 with how many (409 while one of the endpoint's replays runs or it is disabled)."""
    loaded = _load(replay_schemas.ReplaySchema(), body.json_body(), "request")
    with db.connection(_pool()) as conn:
        started = webhook_replays.start(
            conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id), since=loaded["since"],
            until=loaded["until"], types=loaded["types"], settings=_settings(),
        )
    return flask.jsonify(started), 202


@bp.get("/webhooks/<endpoint_id>/replays/<int:replay_id>")
@apidoc.operation(responses={200: replay_schemas.WebhookReplaySchema}, path=_ID, errors=(404,))
def get_webhook_replay(endpoint_id: str, replay_id: int) -> flask.Response:
    """One replay by window and how far it has got."""
    with db.connection(_pool()) as conn:
        return flask.jsonify(webhook_replays.get(
            conn, app_id=auth.current_app_id(), endpoint_id=_endpoint_id(endpoint_id), replay_id=replay_id
        ))
