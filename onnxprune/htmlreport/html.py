"""Small HTML builders: every piece of text goes through ``esc`` (html.escape)."""

from __future__ import annotations

import html
import json


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table(headers: list[str], rows: list, row_classes: list[str] | None = None,
          table_id: str | None = None, numeric_from: int = 1) -> str:
    """An HTML table; columns from ``numeric_from`` on are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{esc(row_classes[i])}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{esc(c)}</td>' if j >= numeric_from else
                        f"<td>{esc(c)}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f"<table{ident}><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def key_values(rows: list[tuple[str, str]]) -> str:
    items = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{items}</tbody></table>'


def section(ident: str, title: str, *parts: str) -> str:
    body = "\n".join(p for p in parts if p)
    return f'<section id="{esc(ident)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def paragraph(text: str, cls: str | None = None) -> str:
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def bullet_list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>" if items else ""


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>" if body else ""


def figure(svg: str, caption: str) -> str:
    return f'<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def as_json(value) -> str:
    return f"<pre>{esc(json.dumps(value, indent=2, default=str))}</pre>"
