"""The HTML shell shared by the run report and the comparison page: escaping, the common style, the page."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["BASE_CSS", "LABEL_CHARS", "ellipsize", "escape", "page", "short_label"]

#: The most characters of a name shown in a figure or a caption (the tables hold the full text).
LABEL_CHARS = 40

#: Style rules both pages use; each page adds its own.
BASE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem}td,th{padding:.15rem .6rem;text-align:right;border-bottom:1px solid
#eee}th{background:#f4f6f8}td:first-child,th:first-child{text-align:left}
.fig svg{max-width:100%;height:auto}.note{color:#666;font-size:.85rem}
.warn{background:#fff6e5;border-left:3px solid #e69500;padding:.4rem .6rem;font-size:.9rem}
h1,.note,.warn,figcaption,td:first-child{overflow-wrap:anywhere}
"""


def escape(x: Any) -> str:
    """``str(x)`` escaped for HTML text and attribute values.

    >>> escape('a<b "c"')
    'a&lt;b &quot;c&quot;'
    """
    return html.escape(str(x), quote=True)


def ellipsize(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters: its start, ``…`` and its end (where names often differ).

    >>> ellipsize("a_very_long_class_name_about_kitchens", 20)
    'a_very_long_…itchens'
    """
    if limit < 3:
        raise ValueError(f"ellipsize: `limit` must be >= 3, got {limit}")
    if len(text) <= limit:
        return text
    head = (2 * (limit - 1)) // 3
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def short_label(text: str, limit: int = LABEL_CHARS) -> str:
    """HTML for a name shown shortened (:func:`ellipsize`), its full text on hover (``title``).

    >>> short_label("cat")
    'cat'
    >>> short_label("x" * 50, 5)
    '<span title="xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx">xx…xx</span>'
    """
    short = ellipsize(text, limit)
    return escape(text) if short == text else f'<span title="{escape(text)}">{escape(short)}</span>'


def page(title: str, body: str, css: str = "") -> str:
    """A self-contained HTML document: ``BASE_CSS`` plus ``css`` inline, nothing fetched."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{BASE_CSS}{css}</style></head>'
        f"<body>\n{body}\n</body></html>\n"
    )
