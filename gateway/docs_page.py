"""`/docs`: the OpenAPI document rendered as one plain HTML page, on the server, with no scripts and no CDN."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
h2{border-bottom:1px solid #ddd;margin-top:2.5rem}
.op{border:1px solid #e3e3e3;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:4.5rem;font:600 13px monospace;color:#fff;border-radius:4px;
        text-align:center;padding:2px 6px;margin-right:.5rem}
.get{background:#2f7d32}.post{background:#1565c0}.delete{background:#c62828}
code,.path{font-family:ui-monospace,monospace}.path{font-weight:600}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #e3e3e3;padding:2px 8px;text-align:left;
vertical-align:top}th{background:#f6f6f6}.muted{color:#666}
"""


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type_of(part) for part in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(repr(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    return escape(str(kind))


def _limits(schema: dict[str, Any]) -> str:
    keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
            "maxItems", "default")
    parts = [f"{key}: <code>{escape(repr(schema[key]))}</code>" for key in keys if key in schema]
    return ", ".join(parts)


def _parameters(parameters: list[dict[str, Any]]) -> str:
    if not parameters:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td>{_type_of(p.get('schema', {}))}</td><td>{'yes' if p.get('required') else ''}</td>"
        f"<td>{escape(p.get('description', ''))} <span class=muted>{_limits(p.get('schema', {}))}</span></td></tr>"
        for p in parameters
    )
    return f"<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th></th></tr>{rows}</table>"


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [f'<div class="op"><span class="method {method}">{method.upper()}</span>'
             f'<span class="path">{escape(path)}</span> &mdash; {escape(op.get("summary", ""))}']
    if op.get("description"):
        parts.append(f"<p>{escape(op['description'])}</p>")
    if op.get("security") == []:
        parts.append('<p class="muted">No API key needed.</p>')
    parts.append(_parameters(op.get("parameters", [])))
    body = op.get("requestBody", {}).get("content", {})
    if body:
        kinds = ", ".join(f"{escape(kind)}: {_type_of(c.get('schema', {}))}" for kind, c in body.items())
        parts.append(f"<p>Body: {kinds}</p>")
    responses = []
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        shapes = ", ".join(f"{_type_of(c.get('schema', {}))} ({escape(kind)})" for kind, c in content.items())
        responses.append(f"<tr><td>{escape(status)}</td><td>{escape(response.get('description', ''))}</td>"
                         f"<td>{shapes}</td></tr>")
    parts.append(f"<table><tr><th>status</th><th>meaning</th><th>body</th></tr>{''.join(responses)}</table></div>")
    return "".join(parts)


def _schema(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{escape(prop)}</code></td><td>{_type_of(spec)}</td><td>{'yes' if prop in required else ''}"
        f"</td><td>{escape(spec.get('description', ''))} <span class=muted>{_limits(spec)}</span></td></tr>"
        for prop, spec in schema.get("properties", {}).items()
    )
    description = f"<p>{escape(schema['description'])}</p>" if schema.get("description") else ""
    table = f"<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>{rows}</table>" if rows else ""
    return f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{description}{table}'


def render_docs(document: dict[str, Any]) -> str:
    info = document.get("info", {})
    by_tag: dict[str, list[str]] = {}
    for path, methods in document.get("paths", {}).items():
        for method, op in methods.items():
            by_tag.setdefault((op.get("tags") or ["other"])[0], []).append(_operation(path, method, op))
    sections = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in by_tag.items())
    schemas = "".join(_schema(n, s) for n, s in sorted(document.get("components", {}).get("schemas", {}).items()))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(info.get("title", "API"))}'
        f"</title><style>{STYLE}</style></head><body><h1>{escape(info.get('title', 'API'))} "
        f"<small class=muted>{escape(info.get('version', ''))}</small></h1>"
        f"<p>{escape(info.get('description', ''))}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>'
        f"{sections}<h2>Schemas</h2>{schemas}</body></html>"
    )
