"""Messages that name a stored template: rendered when they are accepted (POST /queue, batches, schedules)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from mailer import metrics
from mailer.config import Settings
from mailer.domain import errors, templating
from mailer.services import templates
from mailer.store import templates as store

# Distinct (template, version) pairs one request may name: each may be read and compiled (up to 3 x 128 KB).
MAX_TEMPLATES_PER_REQUEST = 20


@dataclasses.dataclass(frozen=True)
class _Found:
    version: int
    compiled: templating.Compiled


def has_template(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any loaded message names a stored template."""
    return any(message.get("template") is not None for message in messages)


def render_messages(
    conn: psycopg.Connection, *, app_id: int, messages: Sequence[dict[str, Any]], batch: bool, settings: Settings
) -> list[dict[str, Any]]:
    """Loaded messages with those that name a template rendered: subject, html and text filled in, and
    `template` as {"id", "version"} of the version used. 404 for a template the app does not have, 422 for
    missing or invalid variables (in a batch under the message's index, as schema errors are)."""
    deadline = time.monotonic() + settings.template_request_render_ms / 1000  # reading and compiling count too
    found = _find_versions(conn, app_id, messages, batch, settings)
    out: list[dict[str, Any]] = []
    problems: dict[str, Any] = {}
    missing: dict[str, Any] = {}
    rendered_count = 0
    tried = 0
    for index, message in enumerate(messages):
        ref = message.get("template")
        if ref is None:
            out.append(message)
            continue
        # The first templated message is always rendered: a request that fits alone is never refused by the clock.
        if tried and time.monotonic() > deadline:
            metrics.templates_rendered(0, _templated(messages[index:]))
            raise errors.ValidationFailed(
                f"rendering the messages of this request took longer than {settings.template_request_render_ms} ms",
                {"template": [
                    f"rendering stopped at message {index} after {settings.template_request_render_ms} ms "
                    "(MAILER_TEMPLATE_REQUEST_RENDER_MS); send fewer messages per request"
                ]},
            )
        tried += 1
        version = found.get((ref["id"], ref.get("version")))
        if version is None:
            missing[str(index)] = {"template": [_unknown(ref)]}
            continue
        try:
            rendered = templates.render_checked(version.compiled, message.get("variables") or {}, settings)
        except errors.ValidationFailed as exc:
            problems[str(index)] = exc.details
            continue
        rendered_count += 1
        out.append({
            **message, "subject": rendered.subject, "html": rendered.html, "text": rendered.text,
            "variables": None, "template": {"id": ref["id"], "version": version.version},
        })
    metrics.templates_rendered(0 if missing or problems else rendered_count, len(problems))
    if missing:
        first = next(iter(missing.values()))["template"][0]
        raise errors.NotFound(first, {"messages": missing} if batch else next(iter(missing.values())))
    if problems:
        first_index, first = next(iter(problems.items()))
        where = f" (message {first_index})" if batch else ""
        raise errors.ValidationFailed(
            f"the template cannot be rendered with these variables{where}", {"messages": problems} if batch else first
        )
    return out


def _templated(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for message in messages if message.get("template") is not None)


def _unknown(ref: Mapping[str, Any]) -> str:
    if ref.get("version") is None:
        return f"no template {ref['id']}"
    return f"no template {ref['id']} with version {ref['version']}"


def _find_versions(
    conn: psycopg.Connection, app_id: int, messages: Sequence[Mapping[str, Any]], batch: bool, settings: Settings
) -> dict[tuple[uuid.UUID, int | None], _Found]:
    wanted: dict[tuple[uuid.UUID, int | None], None] = {}
    for index, message in enumerate(messages):
        if message.get("template") is None:
            continue
        wanted[(message["template"]["id"], message["template"].get("version"))] = None
        if len(wanted) > MAX_TEMPLATES_PER_REQUEST:
            problem = {"template": [
                f"one request may name at most {MAX_TEMPLATES_PER_REQUEST} distinct templates (template, version)"
            ]}
            metrics.templates_rendered(0, _templated(messages))
            raise errors.ValidationFailed(
                problem["template"][0], {"messages": {str(index): problem}} if batch else problem
            )
    if not wanted:
        return {}
    cache = templates.cache_for(settings)
    named = {template_id for template_id, _ in wanted}
    known = [f"{template_id}:{version}" for template_id, version in cache.held() if template_id in named]
    found: dict[tuple[uuid.UUID, int | None], _Found] = {}
    for row in store.find_template_versions(conn, app_id=app_id, wanted=list(wanted), known=known):
        key = (row["template_id"], row["version"])
        compiled = cache.get(key) if not row["has_source"] else None
        if compiled is None:
            if not row["has_source"]:  # dropped from the cache since the query: read it again
                source = store.get_template_version(
                    conn, app_id=app_id, template_id=row["template_id"], version=row["version"]
                )
                if source is None:  # deleted in the meantime
                    continue
                row = {**row, **source}
            compiled = templates.compiled_version(row, settings)
        found[(row["template_id"], row["wanted_version"])] = _Found(row["version"], compiled)
    return found
