"""A tiny HTML builder for the report: escaped text, tables, images, sections, one page.

No template engine: every function returns a string of HTML. Images are either embedded as
base64 ``data:`` URIs (the page is then one self-contained file) or linked by a path relative
to the page.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #444; }
img { max-width: 100%; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { flex: 0 0 auto; } .note { color: #555; font-size: .9em; }
nav ul { columns: 2; } code { background: #f5f5f5; padding: 0 .2em; }
"""


def esc(text: object) -> str:
    """HTML-escape ``str(text)``."""
    return html.escape(str(text), quote=True)


def fmt(value: object, *, pct: bool = False, digits: int = 2) -> str:
    """Format a cell: percentages for fractions when ``pct``, ``-`` for missing / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    if pct:
        return f"{100 * value:.{digits}f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits + 2}g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, caption: str = "") -> str:
    """A table; ``rows`` hold already formatted (escaped) cell strings."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(path: Path, *, page_dir: Path, alt: str, caption: str = "", embed: bool = True) -> str:
    """A figure showing the PNG ``path``: embedded as base64 or linked relative to the page."""
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = path.resolve().relative_to(page_dir.resolve()).as_posix()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{esc(src)}" alt="{esc(alt)}">{cap}</figure>'


def paragraph(text: str, *, cls: str = "") -> str:
    """An escaped paragraph."""
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


@dataclass
class Section:
    """One ``<section>`` of the page: anchor id, heading and body HTML."""

    id: str
    title: str
    body: str


def page(title: str, sections: Sequence[Section], *, intro: str = "") -> str:
    """The whole HTML document with a table of contents linking every section."""
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    parts = "".join(
        f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{intro}<nav><ul>{toc}</ul></nav>{parts}</body></html>\n"
    )
