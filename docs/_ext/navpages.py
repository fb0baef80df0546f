"""Keep every page of docs/ in the navigation.

Contributors add pages (``docs/<topic>.md``); a page outside every toctree would be unreachable from the
navigation (and Sphinx warns, which fails the strict build). Such a page is appended to the toctree of the page
named by ``navpages_into`` (the guides), under "More guides", and the build log names it so that it can be given
its place. A page that a toctree lists before it is written (``navpages_optional`` in conf.py) is left out of the
navigation until it exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

LOG = logging.getLogger(__name__)

_TOCTREE = re.compile(r"```\{toctree\}(.*?)```", re.S)
_ENTRY = re.compile(r"^\s*(?:[^<\n]*<)?([\w./-]+?)(?:\.md)?>?\s*$")


def listed_pages(srcdir: Path) -> set[str]:
    """The documents that the toctrees of the top-level Markdown pages name."""
    listed: set[str] = set()
    for page in srcdir.glob("*.md"):
        for block in _TOCTREE.findall(page.read_text(encoding="utf-8")):
            for line in block.splitlines():
                if not line.strip() or line.strip().startswith(":"):
                    continue
                match = _ENTRY.match(line)
                if match:
                    listed.add(match.group(1))
    return listed


def unlisted_pages(srcdir: Path, root_doc: str) -> list[str]:
    """The top-level Markdown pages of ``srcdir`` that no toctree names."""
    listed = listed_pages(srcdir)
    return sorted(p.stem for p in srcdir.glob("*.md") if p.stem != root_doc and p.stem not in listed)


def adjust_toctrees(app: Sphinx, docname: str, source: list[str]) -> None:
    """Drop optional pages not written yet from a toctree; append the unlisted pages to the guides (source-read)."""
    srcdir = Path(app.srcdir)
    for page in app.config.navpages_optional:
        if not (srcdir / f"{page}.md").exists() and re.search(rf"^{re.escape(page)}[ \t]*$", source[0], re.M):
            LOG.info("navpages: %s.md is not written yet: left out of the navigation", page)
            source[0] = re.sub(rf"^{re.escape(page)}[ \t]*\n", "", source[0], flags=re.M)
    if docname != app.config.navpages_into:
        return
    extra = unlisted_pages(srcdir, app.config.root_doc)
    if extra:
        LOG.info("navpages: in no toctree, listed under 'More guides': %s", ", ".join(extra))
        source[0] += "\n```{toctree}\n:caption: More guides\n:maxdepth: 1\n\n" + "\n".join(extra) + "\n```\n"


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the hook and its configuration values."""
    app.add_config_value("navpages_optional", [], "env")
    app.add_config_value("navpages_into", "index", "env")
    app.connect("source-read", adjust_toctrees)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
