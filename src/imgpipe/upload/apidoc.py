"""The readable API page (``GET /api``), rendered from the OpenAPI document."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html import escape
from typing import Any

STYLE = """
body{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#1a1a1a}
h1,h2,h3{line-height:1.2}h2{margin-top:2.5rem;border-bottom:2px solid #ccc}
code,pre{font:14px/1.4 ui-monospace,monospace;background:#f2f2f2;padding:0 .2em}
pre{padding:.5rem;overflow:auto}table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;border-bottom:1px solid #ddd;padding:.3rem}
.method{font-weight:700;color:#fff;background:#24527a;padding:0 .4em;border-radius:3px}
a{color:#0b57a4}section.op{margin:1.5rem 0}
"""
#: The page's policy: nothing loads, only its own inline style (by hash) applies.
API_CSP = ("default-src 'none'; style-src 'sha256-"
           + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
           + "'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


def _text(text: str) -> str:
    """Plain text with `code spans`, as HTML."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "enum" in schema:
        return " | ".join(f"<code>{escape(json.dumps(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(json.dumps(schema['const']))}</code>"
    kind = schema.get("type", "any")
    if kind == "array":
        return "array of " + _type(schema.get("items", {}))
    if isinstance(kind, list):
        return " or ".join(escape(str(k)) for k in kind)
    return escape(str(kind))


def _fields(schema: dict[str, Any]) -> str:
    props = schema.get("properties") or {}
    if not props:
        return ""
    rows = []
    for name, prop in props.items():
        inner = prop.get("items", prop) if prop.get("type") == "array" else prop
        nested = _fields(inner) if "properties" in inner else ""
        rows.append(
            f"<tr><td><code>{escape(name)}</code></td><td>{_type(prop)}</td>"
            f"<td>{_text(prop.get('description', ''))}{nested}</td></tr>"
        )
    return "<table><tr><th>Field</th><th>Type</th><th>Meaning</th></tr>" + "".join(rows) + "</table>"


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    parts = [(f'<section class="op" id="{escape(method + path)}"><h3><span class="method">'
              f"{escape(method.upper())}</span> <code>{escape(path)}</code> — "
              f"{escape(op['summary'])}</h3>")]
    if op.get("description"):
        parts.append(f"<p>{_text(op['description'])}</p>")
    params = op.get("parameters") or []
    if params:
        parts.append("<table><tr><th>Parameter</th><th>In</th><th>Type</th><th>Meaning</th></tr>")
        for p in params:
            req = " (required)" if p.get("required") else ""
            parts.append(f"<tr><td><code>{escape(p['name'])}</code>{req}</td><td>{escape(p['in'])}"
                         f"</td><td>{_type(p['schema'])}</td><td>{_text(p['description'])}</td></tr>")
        parts.append("</table>")
    for media, content in (op.get("requestBody") or {}).get("content", {}).items():
        parts.append(f"<p>Request body (<code>{escape(media)}</code>):</p>")
        parts.append(_fields(content.get("schema", {})))
    parts.append("<table><tr><th>Status</th><th>Answer</th></tr>")
    for status, resp in op["responses"].items():
        schemas = [c.get("schema") for c in resp.get("content", {}).values() if c.get("schema")]
        body = f" ({_type(schemas[0])})" if schemas else ""
        text = _text(resp["description"])
        if resp.get("x-reasons"):
            links = ", ".join(f'<a href="#reason-{escape(r)}"><code>{escape(r)}</code></a>'
                              for r in resp["x-reasons"])
            text = f"Refused; <code>reason</code> one of: {links}"
        parts.append(f"<tr><td>{escape(status)}</td><td>{text}{body}</td></tr>")
    parts.append("</table></section>")
    return "".join(parts)


def render_api_page(doc: dict[str, Any]) -> str:
    """Every endpoint, field and error reason of ``doc`` as one HTML page."""
    info = doc["info"]
    out = [
        ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
         '<meta name="viewport" content="width=device-width,initial-scale=1">'
         f"<title>{escape(info['title'])} API</title><style>{STYLE}</style></head><body>"),
        f"<h1>{escape(info['title'])} API <small>{escape(info['version'])}</small></h1>",
        f"<p>{escape(info['description'])}</p>",
        ('<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). '
         'Back to <a href="/">the upload page</a>.</p>'),
        "<nav aria-label=\"Endpoints\"><ul>",
    ]
    ops = [(m, p, op) for p, methods in doc["paths"].items() for m, op in methods.items()]
    for method, path, op in ops:
        out.append(f'<li><a href="#{escape(method + path)}">{escape(method.upper())} '
                   f"<code>{escape(path)}</code></a> — {escape(op['summary'])}</li>")
    out.append('<li><a href="#errors">Error reasons</a></li>'
               '<li><a href="#schemas">Data structures</a></li></ul></nav><h2>Endpoints</h2>')
    out.extend(_operation(m, p, op) for m, p, op in ops)
    out.append('<h2 id="errors">Error reasons</h2><p>Every refusal is JSON '
               '<code>{"error": {"reason": ..., "message": ...}}</code>.</p>'
               "<table><tr><th>Reason</th><th>Status</th><th>Meaning</th></tr>")
    for reason, entry in doc["x-error-reasons"].items():
        out.append(f'<tr id="reason-{escape(reason)}"><td><code>{escape(reason)}</code></td>'
                   f"<td>{entry['status']}</td><td>{escape(entry['description'])}</td></tr>")
    out.append('</table><h2 id="schemas">Data structures</h2>')
    for name, schema in doc["components"]["schemas"].items():
        out.append(f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{_fields(schema)}')
    out.append("</body></html>")
    return "\n".join(out)
