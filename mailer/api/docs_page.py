"""GET /docs: the OpenAPI document rendered on the server as one plain HTML page.

No JavaScript renderer and no CDN: the page lists every path with its operations, parameters, request
body and responses, then every schema with its properties, linked to each other. It reads only the
document, so it shows exactly what /openapi.json says.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
section.op { border: 1px solid #ddd; border-radius: 6px; padding: .3em 1em .8em; margin: 1em 0; }
.method { display: inline-block; min-width: 5em; font-weight: bold; text-transform: uppercase; }
code, .path { font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top; }
.muted { color: #666; }
"""


def render(document: dict[str, Any]) -> str:
    """The whole page for an OpenAPI 3 document."""
    info = document.get("info", {})
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(info.get('title', 'API'))} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} <span class=muted>{escape(str(info.get('version', '')))}</span></h1>",
        f"<p>{_text(info.get('description', ''))}</p>",
        '<p>The machine-readable document: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
        f"{escape(str(document.get('openapi', '')))}).</p>",
        _security(document),
        "<h2>Paths</h2>",
    ]
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            parts.append(_operation(path, method, operation))
    parts.append("<h2>Schemas</h2>")
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        parts.append(_schema(name, schema))
    parts.append("</body></html>")
    return "\n".join(parts)


def _text(value: str) -> str:
    return escape(value).replace("\n\n", "</p><p>")


def _security(document: dict[str, Any]) -> str:
    schemes = document.get("components", {}).get("securitySchemes", {})
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code></td><td>{escape(scheme.get('scheme', scheme.get('type', '')))}</td>"
        f"<td>{escape(scheme.get('description', ''))}</td></tr>"
        for name, scheme in schemes.items()
    )
    return f"<h2>Authentication</h2><table><tr><th>scheme</th><th>type</th><th></th></tr>{rows}</table>"


def _operation(path: str, method: str, operation: dict[str, Any]) -> str:
    security = operation.get("security") or []
    auth = ", ".join(name for requirement in security for name in requirement) or "none"
    parts = [
        f'<section class=op id="{escape(operation.get("operationId", ""))}">',
        f"<h3><span class=method>{escape(method)}</span> <span class=path>{escape(path)}</span></h3>",
        f"<p>{escape(operation.get('summary', ''))} <span class=muted>(auth: {escape(auth)})</span></p>",
    ]
    if operation.get("description"):
        parts.append(f"<p class=muted>{_text(operation['description'])}</p>")
    parameters = operation.get("parameters") or []
    if parameters:
        parts.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th></th></tr>")
        parts.extend(
            f"<tr><td><code>{escape(parameter['name'])}</code></td><td>{escape(parameter['in'])}</td>"
            f"<td>{_type(parameter.get('schema', {}))}</td><td>{'yes' if parameter.get('required') else ''}</td>"
            f"<td>{escape(parameter.get('description', ''))}</td></tr>"
            for parameter in parameters
        )
        parts.append("</table>")
    body = operation.get("requestBody")
    if body:
        for media_type, content in body.get("content", {}).items():
            parts.append(f"<p>Body ({escape(media_type)}): {_type(content.get('schema', {}))}</p>")
    parts.append("<table><tr><th>status</th><th>answer</th><th></th></tr>")
    for status, answer in operation.get("responses", {}).items():
        contents = answer.get("content", {})
        shown = "; ".join(f"{_type(content.get('schema', {}))} <span class=muted>{escape(media_type)}</span>"
                          for media_type, content in contents.items())
        description = escape(answer.get("description", ""))
        parts.append(f"<tr><td>{escape(status)}</td><td>{shown}</td><td>{description}</td></tr>")
    parts.append("</table></section>")
    return "\n".join(parts)


def _schema(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{escape(field)}</code></td><td>{_type(prop)}</td><td>{'yes' if field in required else ''}</td>"
        f"<td>{escape(prop.get('description', ''))}</td></tr>"
        for field, prop in schema.get("properties", {}).items()
    )
    closed = " <span class=muted>(no other fields)</span>" if schema.get("additionalProperties") is False else ""
    description = f"<p>{escape(schema['description'])}</p>" if schema.get("description") else ""
    return (
        f'<section class=op id="schema-{escape(name)}"><h3>{escape(name)}{closed}</h3>{description}'
        f"<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>{rows}</table></section>"
    )


def _type(schema: dict[str, Any]) -> str:
    """A short, linked description of a JSON Schema: `array of <a>Address</a>`, `string (date-time), or null`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for keyword, joiner in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if keyword in schema:
            return joiner.join(_type(item) for item in schema[keyword])
    kind = schema.get("type", "any")
    if kind == "array":
        text = f"array of {_type(schema.get('items', {}))}"
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict) and schema["additionalProperties"]:
        text = f"object of {_type(schema['additionalProperties'])}"
    else:
        text = escape(str(kind)) + (f" ({escape(schema['format'])})" if schema.get("format") else "")
    if schema.get("enum"):
        text += ": " + ", ".join(f"<code>{escape(str(value))}</code>" for value in schema["enum"] if value is not None)
    if schema.get("nullable"):
        text += ", or null"
    return text
