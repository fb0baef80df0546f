"""Keep every page of docs/ in the navigation: a Markdown page that index.md's toctrees do not list is appended.

Helpers and contributors add pages (``docs/<topic>.md``); a page outside every toctree would be unreachable from
the navigation (and Sphinx warns, which fails the strict build). Such a page is added to a last toctree, "More
guides", of the home page, and the build log names it so that it can be given its place in index.md. A page that
index.md lists before it is written (``navpages_optional`` in conf.py) is left out of the navigation until it exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

LOG = logging.getLogger(__name__)

_ENTRY = re.compile(r"^\s*(?:[^<\n]*<)?([\w./-]+?)(?:\.md)?>?\s*$")


def unlisted_pages(srcdir: Path, index_text: str) -> list[str]:
    """The top-level Markdown pages of ``srcdir`` that the index's toctrees do not name."""
    listed: set[str] = set()
    for block in re.findall(r"```\{toctree\}(.*?)```", index_text, flags=re.S):
        for line in block.splitlines():
            if line.strip().startswith(":") or not line.strip():
                continue
            match = _ENTRY.match(line)
            if match:
                listed.add(match.group(1))
    pages = sorted(p.stem for p in srcdir.glob("*.md") if p.stem != "index")
    return [page for page in pages if page not in listed]


def add_unlisted(app: Sphinx, docname: str, source: list[str]) -> None:
    """Append the unlisted pages to the home page's source (source-read); drop optional pages not written yet."""
    if docname != app.config.root_doc:
        return
    srcdir = Path(app.srcdir)
    for page in app.config.navpages_optional:
        if not (srcdir / f"{page}.md").exists():
            LOG.info("navpages: %s.md is not written yet: left out of the navigation", page)
            source[0] = re.sub(rf"^{re.escape(page)}[ \t]*\n", "", source[0], flags=re.M)
    extra = unlisted_pages(srcdir, source[0])
    if extra:
        LOG.info("navpages: not in index.md's toctrees, listed under 'More guides': %s", ", ".join(extra))
        source[0] += "\n```{toctree}\n:caption: More guides\n:maxdepth: 1\n\n" + "\n".join(extra) + "\n```\n"


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the hook and its configuration value."""
    app.add_config_value("navpages_optional", [], "env")
    app.connect("source-read", add_unlisted)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
