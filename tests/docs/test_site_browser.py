"""The documentation site in a real browser: built strictly, served on 127.0.0.1, opened in headless Chromium.

Every page loads without a console error, every internal link and image resolves (anchors included), the search
finds "CLML", and the API page of ``mlcl.losses.functional.clml`` shows its equation laid out as MathML. Set
``MLCL_DOCS_SCREENSHOTS=DIR`` to keep screenshots of the quickstart and of that API entry.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

from tests.helpers.browser import chromium_driver
from tests.helpers.paths import REPO

CLML_ID = "mlcl.losses.functional.clml"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as .ci/run builds it (strict: -n -W), or the one .ci/run has just built (MLCL_DOCS_BUILT)."""
    built = os.environ.get("MLCL_DOCS_BUILT")
    if built:
        if not (Path(built) / "index.html").is_file():
            pytest.fail(f"MLCL_DOCS_BUILT={built} holds no built site (index.html)")
        return Path(built).resolve()
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-n", "-W", "--keep-going", "-q", "docs", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"the strict docs build failed:\n{proc.stderr[-6000:]}"
    return out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    drv = chromium_driver(1400)
    try:
        yield drv
    finally:
        drv.quit()


def _pages(site: Path) -> list[str]:
    pages = (p.relative_to(site) for p in site.rglob("*.html"))
    return sorted(p.as_posix() for p in pages if not any(part.startswith("_") for part in p.parts))


class _Links(HTMLParser):
    """The ids, link targets and image sources of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"] or "")
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"] or "")
        if tag in ("img", "script") and a.get("src"):
            self.srcs.append(a["src"] or "")
        if tag == "link" and a.get("href") and a.get("rel") in ("stylesheet", "preload"):
            self.srcs.append(a["href"] or "")


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_the_site_has_the_pages_of_the_navigation(site: Path) -> None:
    pages = set(_pages(site))
    for page in ("index.html", "quickstart.html", "missing-labels.html", "clml.html", "mulcon.html", "reports.html",
                 "deployment.html", "reliability.html", "distributed.html", "losses.html", "metrics.html",
                 "datasets.html", "reproduction.html", "architecture.html", "api/index.html",
                 "api/mlcl.losses.functional.html", "search.html"):  # fmt: skip
        assert page in pages, f"{page} was not built"
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in ("quickstart.html", "missing-labels.html", "api/index.html"):
        assert f'href="{page}"' in index, f"the home page's navigation does not link {page}"


def test_every_internal_link_and_anchor_resolves(site: Path, base_url: str) -> None:
    parsed = {page: _parse(site / page) for page in _pages(site)}
    status: dict[str, int] = {}
    problems = []
    for page, links in parsed.items():
        page_url = urljoin(base_url, page)
        for ref in links.hrefs + links.srcs:
            url = urljoin(page_url, ref)
            if urlparse(url).netloc != urlparse(base_url).netloc or urlparse(url).scheme not in ("http", "https"):
                continue
            target, fragment = urldefrag(url)
            if target not in status:
                try:
                    with urllib.request.urlopen(target, timeout=30) as resp:
                        status[target] = resp.status
                except urllib.error.HTTPError as exc:
                    status[target] = exc.code
            if status[target] != 200:
                problems.append(f"{page}: {ref} -> HTTP {status[target]}")
                continue
            if fragment:
                rel = unquote(urlparse(target).path).lstrip("/") or "index.html"
                if rel.endswith("/"):
                    rel += "index.html"
                ids = parsed[rel].ids if rel in parsed else _parse(site / rel).ids if rel.endswith(".html") else set()
                if unquote(fragment) not in ids:
                    problems.append(f"{page}: {ref} -> no element with id {unquote(fragment)!r} in {rel}")
    assert not problems, f"{len(problems)} broken links:\n" + "\n".join(problems[:50])
    assert len(status) > 50, f"only {len(status)} internal targets checked: the parser found too few links"


def test_every_page_loads_without_console_errors(site: Path, base_url: str, driver: Any) -> None:
    errors = []
    pages = _pages(site)
    for page in pages:
        driver.get(urljoin(base_url, page))
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.title, f"{page} has no title"
        for entry in driver.get_log("browser"):
            if entry["level"] == "SEVERE":
                errors.append(f"{page}: {entry['message']}")
    assert not errors, "\n".join(errors)
    assert len(pages) > 20


def test_the_search_finds_clml(base_url: str, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(urljoin(base_url, "search.html"))
    boxes = [b for b in driver.find_elements(By.CSS_SELECTOR, "input[name='q']") if b.is_displayed()]
    assert boxes, "no visible search box on search.html"
    boxes[0].send_keys("CLML", Keys.ENTER)
    deadline = time.monotonic() + 60
    links: list[str] = []
    while time.monotonic() < deadline:
        links = [a.get_attribute("href") or "" for a in driver.find_elements(By.CSS_SELECTOR, "#search-results a")]
        summary = driver.find_elements(By.CSS_SELECTOR, "#search-results p.search-summary")
        if summary and "found" in summary[0].text.lower():  # "Search finished, found N pages ..."
            break
        time.sleep(0.2)
    assert "q=CLML" in driver.current_url
    pages = {urlparse(link).path.lstrip("/") for link in links}
    assert {"clml.html", "losses.html", "api/mlcl.losses.functional.html"} <= pages, f"CLML found {sorted(pages)}"
    assert driver.get_log("browser") == [] or all(e["level"] != "SEVERE" for e in driver.get_log("browser"))


def test_the_clml_api_entry_shows_its_equation(base_url: str, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.get(urljoin(base_url, f"api/mlcl.losses.functional.html#{CLML_ID}"))
    entry = driver.find_element(By.ID, CLML_ID)  # the <dt> of the signature
    body = entry.find_element(By.XPATH, "following-sibling::dd[1]")
    equations = body.find_elements(By.CSS_SELECTOR, "div.math math")
    assert len(equations) >= 2, "the loss and its gradient should both be displayed equations"
    loss = equations[0]
    assert loss.is_displayed()
    assert "math" in loss.value_of_css_property("display"), "the browser did not lay the equation out as MathML"
    size = loss.size
    assert size["width"] > 150 and size["height"] > 25, f"the equation is not laid out: {size}"
    markup = loss.get_attribute("outerHTML") or ""
    for part in ("<mfrac", "\u2211", "<msub", "\u03bb", "\u0394"):  # a fraction, the sum, subscripts, lambda, Delta
        assert part in markup or part.encode("ascii", "xmlcharrefreplace").decode() in markup, part
    assert "\\frac" not in body.text, "raw LaTeX shown instead of the equation"
    shots = os.environ.get("MLCL_DOCS_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        driver.execute_script("arguments[0].scrollIntoView()", entry)
        driver.save_screenshot(str(Path(shots) / "api_clml.png"))
        driver.get(urljoin(base_url, "quickstart.html"))
        driver.save_screenshot(str(Path(shots) / "quickstart.png"))
