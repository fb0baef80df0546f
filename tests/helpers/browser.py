"""Headless Chromium for the browser tests (Debian's chromium and chromedriver, which .ci/run installs)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_driver(height: int = 1400) -> Any:
    """A headless Chromium WebDriver, 1280 px wide, keeping the browser's console log; fails when one is missing."""
    missing = [t for t in ("chromium", "chromedriver") if shutil.which(t) is None]
    if missing or not Path(CHROMEDRIVER).is_file():
        pytest.fail(
            f"the browser test needs {', '.join(missing) or CHROMEDRIVER}: install them with "
            "`apt-get install chromium chromium-driver` (.ci/run does)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser test needs selenium: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size=1280,{height}"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or ""
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
