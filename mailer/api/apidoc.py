"""Each route describes itself where it is defined: `@apidoc.operation(...)` beside `@bp.get(...)`.

The marks only attach an `Operation` to the view function; `mailer.api.openapi` walks the app's URL map
and turns every marked view into an OpenAPI operation, with the marshmallow schemas named here (the same
schemas that validate the requests) as its parameters, body and responses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from marshmallow import Schema

View = TypeVar("View", bound=Callable[..., Any])
SchemaLike = type[Schema] | Schema
Auth = Literal["bearer", "basic", "none"]

_ATTRIBUTE = "__openapi_operation__"

# Path parameters that are UUIDs (the URL converter itself takes any string: a non-UUID is a 404).
UUID: Mapping[str, Any] = {"type": "string", "format": "uuid"}


@dataclasses.dataclass(frozen=True)
class Content:
    """A response body that is not JSON: its media type and a JSON Schema of it."""

    media_type: str
    schema: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"type": "string"})


@dataclasses.dataclass(frozen=True)
class Operation:
    """What one route takes and answers; summary and description come from the view's docstring.

    `responses` maps each success status to a schema (JSON), several (one of them), a `Content` (another
    media type) or None (no body). Error responses are added from `errors` and from what the route does
    (auth, body, query, database); each one is the shared `Error` schema.
    """

    responses: Mapping[int, SchemaLike | Sequence[SchemaLike] | Content | None]
    auth: Auth = "bearer"
    body: SchemaLike | Sequence[SchemaLike] | Mapping[str, Any] | None = None
    query: SchemaLike | None = None
    path: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    headers: Sequence[Mapping[str, Any]] = ()
    errors: Sequence[int] = ()
    database: bool = True
    description: str | None = None


def operation(
    *,
    responses: Mapping[int, SchemaLike | Sequence[SchemaLike] | Content | None],
    auth: Auth = "bearer",
    body: SchemaLike | Sequence[SchemaLike] | Mapping[str, Any] | None = None,
    query: SchemaLike | None = None,
    path: Mapping[str, Mapping[str, Any]] | None = None,
    headers: Sequence[Mapping[str, Any]] = (),
    errors: Sequence[int] = (),
    database: bool = True,
    description: str | None = None,
) -> Callable[[View], View]:
    """Mark a view function with the OpenAPI description of its route (the function is unchanged)."""
    described = Operation(
        responses=responses, auth=auth, body=body, query=query, path=path or {}, headers=headers,
        errors=errors, database=database, description=description,
    )

    def mark(view: View) -> View:
        setattr(view, _ATTRIBUTE, described)
        return view

    return mark


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """The Operation a view was marked with, if any."""
    return getattr(view, _ATTRIBUTE, None)
