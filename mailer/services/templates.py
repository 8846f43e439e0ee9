"""Stored templates: create, version, choose the active version, delete, read and preview them."""

from __future__ import annotations

import collections
import json
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg

from mailer.config import Settings
from mailer.domain import errors, templating
from mailer.domain.timefmt import rfc3339
from mailer.store import templates as store

MAX_NAME = 200  # characters of a template's name (also a CHECK in sql/migrations/0037)
SOURCE_FIELDS = ("subject", "html", "text", "variables")


class CompiledCache:
    """Compiled versions by (template id, version), least recently used first out, at most `size` of them and
    `max_bytes` of source (an estimate of their memory); safe across threads.

    Versions never change (a trigger refuses it, sql/migrations/0037), so an entry never goes stale.
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: collections.OrderedDict[tuple[uuid.UUID, int], tuple[templating.Compiled, int]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: tuple[uuid.UUID, int]) -> templating.Compiled | None:
        """The compiled version, if this process has it."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: tuple[uuid.UUID, int], compiled: templating.Compiled, source_bytes: int) -> None:
        """Keep a compiled version, dropping the least recently used beyond the bounds (one larger than all of
        max_bytes is not kept)."""
        if self._size <= 0 or source_bytes > self._max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += source_bytes - (old[1] if old else 0)
            self._entries[key] = (compiled, source_bytes)
            while len(self._entries) > self._size or self._bytes > self._max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][1]

    def held(self) -> list[tuple[uuid.UUID, int]]:
        """What the cache holds now."""
        with self._lock:
            return list(self._entries)


_caches: dict[tuple[int, int], CompiledCache] = {}
_caches_lock = threading.Lock()


def cache_for(settings: Settings) -> CompiledCache:
    """The process's cache of compiled versions (one per cache bounds: tests use several settings)."""
    bounds = (settings.template_cache_size, settings.template_cache_bytes)
    with _caches_lock:
        found = _caches.get(bounds)
        if found is None:
            found = _caches[bounds] = CompiledCache(*bounds)
        return found


def source_of(row: Mapping[str, Any]) -> templating.Source:
    """A stored (or submitted) version as the renderer's Source."""
    return templating.Source(
        subject=row.get("subject"), html=row.get("html"), text=row.get("text"), variables=row.get("variables")
    )


def compiled_version(row: Mapping[str, Any], settings: Settings) -> templating.Compiled:
    """A stored version compiled, from the cache when this process has it."""
    cache = cache_for(settings)
    key = (row["template_id"], row["version"])
    found = cache.get(key)
    if found is None:
        found = templating.check(source_of(row), templating.Limits.from_settings(settings))
        cache.put(key, found, source_bytes(row))
    return found


def source_bytes(row: Mapping[str, Any]) -> int:
    """A version's source size in characters, the estimate of its compiled size the cache is bounded by."""
    parts = [row.get(field) for field in ("subject", "html", "text")]
    variables = row.get("variables")
    return sum(len(part) for part in parts if part) + (len(json.dumps(variables)) if variables is not None else 0)


# --- templates and versions ---


def create(
    conn: psycopg.Connection, *, app_id: int, name: str, source: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """A new template with version 1 (422 when it does not parse or the app has too many)."""
    compiled = templating.check(source_of(source), templating.Limits.from_settings(settings))
    template_id = uuid.uuid4()
    limit = settings.template_max_per_app
    with conn.transaction():
        if not store.lock_app_for_templates(conn, app_id=app_id):
            raise errors.Unauthorized("invalid or revoked API key")
        created = store.insert_template(
            conn, template_id=template_id, app_id=app_id, name=name, source=source, max_templates=limit
        )
    if created is None:
        raise errors.ValidationFailed(
            f"an app may have at most {limit} templates (MAILER_TEMPLATE_MAX_PER_APP); delete one to add another",
            {"templates": [f"at most {limit} templates per app"], "limit": limit},
        )
    cache_for(settings).put((template_id, 1), compiled, source_bytes(source))
    return {"id": str(template_id), "name": created["name"], "version": 1, "active_version": 1}


def add_version(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, source: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """The template's next version (422 when it does not parse or the template has too many)."""
    compiled = templating.check(source_of(source), templating.Limits.from_settings(settings))
    limit = settings.template_max_versions
    added = store.insert_template_version(
        conn, app_id=app_id, template_id=template_id, source=source, max_versions=limit
    )
    if added is None:
        get_template(conn, app_id=app_id, template_id=template_id)  # NotFound when unknown
        raise errors.ValidationFailed(
            f"a template may have at most {limit} versions (MAILER_TEMPLATE_MAX_VERSIONS); create a new template",
            {"versions": [f"at most {limit} versions per template"], "limit": limit},
        )
    cache_for(settings).put((template_id, added["version"]), compiled, source_bytes(source))
    template = get_template(conn, app_id=app_id, template_id=template_id)
    return {**view(template), "version": added["version"]}


def get_template(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> dict[str, Any]:
    """One live template of the app (NotFound for others', and deleted ones)."""
    template = store.get_template(conn, app_id=app_id, template_id=template_id)
    if template is None:
        raise errors.NotFound(f"no template {template_id}")
    return template


def set_active_version(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, version: int
) -> dict[str, Any]:
    """Make version n the one messages use by default (422 when there is no version n)."""
    updated = store.set_template_active_version(conn, app_id=app_id, template_id=template_id, version=version)
    if updated is None:
        template = get_template(conn, app_id=app_id, template_id=template_id)
        raise errors.ValidationFailed(
            f"template {template_id} has no version {version}",
            {"active_version": [f"no version {version}; versions are 1 to {template['latest_version']}"]},
        )
    return view(updated)


def delete(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> None:
    """Delete a template (409 while an active schedule names it); jobs rendered from it keep their content."""
    with conn.transaction():
        # The lock first, the count after: a schedule naming the template holds a share lock on it until
        # its insert commits (scheduling.create), so the count, read after the lock, sees it.
        if not store.lock_template(conn, app_id=app_id, template_id=template_id):
            raise errors.NotFound(f"no template {template_id}")
        schedules = store.count_active_schedules_of_template(conn, app_id=app_id, template_id=template_id)
        if schedules:
            raise errors.Conflict(
                f"{schedules} active schedule(s) use this template; change or stop them first",
                {"schedules": schedules},
            )
        store.delete_template(conn, app_id=app_id, template_id=template_id)


def view(template: Mapping[str, Any]) -> dict[str, Any]:
    """A template as the API shows it (without its versions)."""
    return {
        "id": str(template["id"]),
        "name": template["name"],
        "active_version": template["active_version"],
        "latest_version": template["latest_version"],
        "created_at": rfc3339(template["created_at"]),
        "updated_at": rfc3339(template["updated_at"]),
    }


def version_view(version: Mapping[str, Any]) -> dict[str, Any]:
    """One version as the API shows it."""
    return {
        "version": version["version"],
        **{field: version[field] for field in SOURCE_FIELDS},
        "created_at": rfc3339(version["created_at"]),
    }


# --- reads (the API and the dashboard) ---


def list_page(
    conn: psycopg.Connection, *, app_id: int, after: tuple[Any, uuid.UUID] | None, limit: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A page of the app's templates (newest first) as views, and the last row when there is more."""
    rows = store.list_templates(conn, app_id=app_id, after=after, limit=limit + 1)
    more = len(rows) > limit
    return [view(row) for row in rows[:limit]], rows[limit - 1] if more else None


def page_of(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, version: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A template with `versions` [{version, created_at}] (no source), and the source of the chosen version
    (the active one when None or not a version of it); NotFound for others'."""
    template = get_template(conn, app_id=app_id, template_id=template_id)
    dates = store.list_template_version_dates(conn, app_id=app_id, template_id=template_id)
    chosen = version if version is not None and 1 <= version <= template["latest_version"] else None
    shown = store.get_template_version(
        conn, app_id=app_id, template_id=template_id, version=chosen or template["active_version"]
    )
    if shown is None:  # deleted since get_template (outside a snapshot)
        raise errors.NotFound(f"no template {template_id}")
    versions = [{"version": row["version"], "created_at": rfc3339(row["created_at"])} for row in dates]
    return {**view(template), "versions": versions}, version_view(shown)


def get_with_versions(conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID) -> dict[str, Any]:
    """A template with every version, oldest first (NotFound for others')."""
    template = get_template(conn, app_id=app_id, template_id=template_id)
    versions = store.list_template_versions(conn, app_id=app_id, template_id=template_id)
    return {**view(template), "versions": [version_view(version) for version in versions]}


def get_version(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, version: int | None
) -> dict[str, Any]:
    """One version (the active one when None) as the API shows it; NotFound / 422 for an unknown one."""
    found = store.get_template_version(conn, app_id=app_id, template_id=template_id, version=version)
    if found is None:
        template = get_template(conn, app_id=app_id, template_id=template_id)
        raise errors.ValidationFailed(
            f"template {template_id} has no version {version}",
            {"version": [f"no version {version}; versions are 1 to {template['latest_version']}"]},
        )
    return found


def preview(
    conn: psycopg.Connection, *, app_id: int, template_id: uuid.UUID, version: int | None,
    variables: Mapping[str, Any], settings: Settings,
) -> dict[str, Any]:
    """What a message with these variables would carry: {subject, html, text}; nothing is stored."""
    found = get_version(conn, app_id=app_id, template_id=template_id, version=version)
    rendered = render_checked(compiled_version(found, settings), variables, settings)
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}


def render_checked(
    compiled: templating.Compiled, variables: Mapping[str, Any], settings: Settings
) -> templating.Rendered:
    """Render one message: the renderer's checks, and those a message's subject and body must pass."""
    rendered = templating.render(compiled, variables, templating.Limits.from_settings(settings))
    problems: dict[str, list[str]] = {}
    subject = rendered.subject or ""
    if not subject.strip():
        problems["subject"] = ["the template renders an empty subject"]
    elif len(subject) > 998:
        problems["subject"] = [f"the rendered subject has {len(subject)} characters; at most 998"]
    if not (rendered.text or rendered.html):
        problems["template"] = ["the template renders neither text nor html"]
    if problems:
        raise errors.ValidationFailed("the rendered message is not valid", problems)
    return rendered
