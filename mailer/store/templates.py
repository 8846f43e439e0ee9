"""Stored templates and their immutable versions."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from mailer.store import _run


def _source(source: Mapping[str, Any]) -> dict[str, Any]:
    variables = source.get("variables")
    return {
        "subject": source.get("subject"), "html": source.get("html"), "text": source.get("text"),
        "variables": None if variables is None else _run.jsonb(variables),
    }


def lock_app_for_templates(conn: psycopg.Connection, *, app_id: int) -> bool:
    """Lock the app's row for this transaction (one template creation at a time); False when unknown."""
    return _run.one_row(conn, "lock_app_for_templates", app_id=app_id) is not None


def insert_template(
    conn: psycopg.Connection, *, template_id: uuid.UUID, app_id: int, name: str, source: Mapping[str, Any],
    max_templates: int,
) -> dict[str, Any] | None:
    """A new template with its version 1; None when the app has max_templates already."""
    return _run.one_row(
        conn, "insert_template", id=template_id, app_id=app_id, name=name, max_templates=max_templates,
        **_source(source),
    )


def insert_template_version(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, source: Mapping[str, Any], max_versions: int
) -> dict[str, Any] | None:
    """The template's next version; None when unknown, deleted or at max_versions."""
    return _run.one_row(
        conn, "insert_template_version", app_id=app_id, template_id=template_id, max_versions=max_versions,
        **_source(source),
    )


def get_template(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> dict[str, Any] | None:
    """One live template of one app."""
    return _run.one_row(conn, "get_template", id=template_id, app_id=app_id)


def list_templates(
    conn: psycopg.Connection, *, app_id: int, after: tuple[dt.datetime, uuid.UUID] | None, limit: int
) -> list[dict[str, Any]]:
    """A page of an app's live templates, newest first."""
    return _run.all_rows(
        conn, "list_templates", app_id=app_id, limit=limit,
        after_created_at=after[0] if after else None, after_id=after[1] if after else None,
    )


def list_template_versions(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every version of a live template, oldest first."""
    return _run.all_rows(conn, "list_template_versions", app_id=app_id, template_id=template_id)


def list_template_version_dates(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The versions (number, created_at; no source) of a live template, oldest first."""
    return _run.all_rows(conn, "list_template_version_dates", app_id=app_id, template_id=template_id)


def get_template_version(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, version: int | None
) -> dict[str, Any] | None:
    """One version of a live template (the active one when version is None)."""
    return _run.one_row(conn, "get_template_version", app_id=app_id, template_id=template_id, version=version)


def find_template_versions(
    conn: psycopg.Connection, *, app_id: int, wanted: Sequence[tuple[uuid.UUID, int | None]], known: Sequence[str]
) -> list[dict[str, Any]]:
    """The versions messages name, with their source unless `known` ("id:version") lists them."""
    return _run.all_rows(
        conn, "find_template_versions", app_id=app_id, template_ids=[template_id for template_id, _ in wanted],
        versions=[version for _, version in wanted], known=list(known),
    )


def set_template_active_version(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, version: int
) -> dict[str, Any] | None:
    """Make an existing version active; None when the template or the version is unknown."""
    return _run.one_row(conn, "set_template_active_version", id=template_id, app_id=app_id, version=version)


def lock_template(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> bool:
    """Lock a live template for this transaction; False when unknown."""
    return _run.one_row(conn, "lock_template", id=template_id, app_id=app_id) is not None


def share_template(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> bool:
    """Keep a live template from being deleted until this transaction ends; False when unknown."""
    return _run.one_row(conn, "share_template", id=template_id, app_id=app_id) is not None


def count_active_schedules_of_template(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> int:
    """How many active schedules of the app name the template."""
    row = _run.one_row(conn, "count_active_schedules_of_template", app_id=app_id, template_id=template_id)
    return int(row["schedules"]) if row else 0


def delete_template(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> bool:
    """Mark a live template deleted; False when unknown."""
    return _run.one_row(conn, "delete_template", id=template_id, app_id=app_id) is not None
