"""Render Sphinx's math as MathML at build time (latex2mathml): no JavaScript, nothing fetched.

The docstrings write their equations in LaTeX (``.. math::`` blocks and ``:math:`` roles); the pages write
them as ``$...$`` and ``$$...$$`` (MyST's dollarmath). Every browser of the last years lays MathML out
natively (Chromium since 109, Firefox, Safari), so the site needs no MathJax or KaTeX download and works offline.
A LaTeX command that latex2mathml cannot convert fails the build with the expression in the message.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError


def _mathml(latex: str, display: str) -> str:
    try:
        return convert(latex, display=display)
    except Exception as exc:  # latex2mathml raises several exception types for unsupported input
        raise ExtensionError(f"cannot convert the equation {latex!r} to MathML: {exc}") from exc


def _visit_inline(self: Any, node: nodes.Element) -> None:
    self.body.append(f'<span class="math mathml">{_mathml(node.astext(), "inline")}</span>')
    raise nodes.SkipNode


def _visit_block(self: Any, node: nodes.Element) -> None:
    if node.get("label"):
        self.body.append(f'<span class="eqno">({node["number"]})</span>')
    # a block may hold several equations separated by blank lines (as Sphinx's MathJax renderer splits them)
    parts = [part for part in node.astext().split("\n\n") if part.strip()]
    html = "".join(_mathml(part, "block") for part in parts)
    self.body.append(f'<div class="math mathml">{html}</div>')
    raise nodes.SkipNode


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the renderer and make it the HTML builder's math renderer."""
    app.add_html_math_renderer("mathml", (_visit_inline, None), (_visit_block, None))
    app.config.html_math_renderer = "mathml"
    return {"parallel_read_safe": True, "parallel_write_safe": True}
