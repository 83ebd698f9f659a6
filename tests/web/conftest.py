"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, ``bash scripts/browser.sh
install``) driven by Selenium, and the HTTP service on a free 127.0.0.1 port.

Selenium is pointed at the two binaries, so nothing is downloaded (no Selenium Manager). A missing
browser skips the browser tests, or fails them when ``XMR_REQUIRE_SERVICES=1`` (as in CI).
Screenshots go to ``XMR_SCREENSHOT_DIR`` (default ``.work/screenshots``, ignored by git).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must never fetch a driver or browser


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("XMR_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver) from XMR_CHROMIUM / XMR_CHROMEDRIVER or PATH."""
    hint = "install them with `bash scripts/browser.sh install` (Debian's chromium + chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    browser = os.environ.get("XMR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("XMR_CHROMEDRIVER") or shutil.which("chromedriver")
    if not driver and Path("/usr/lib/chromium/chromedriver").is_file():
        driver = "/usr/lib/chromium/chromedriver"
    if not browser or not driver or not Path(browser).is_file() or not Path(driver).is_file():
        _unavailable(f"headless browser missing (chromium: {browser}, chromedriver: {driver}); {hint}")
    return browser, driver


@pytest.fixture(scope="module")
def browser(chromium_paths: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium per test module, with a fresh profile."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as e:
        _unavailable(f"chromium at {binary} did not start: {str(e).splitlines()[0]}")
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshot() -> Callable[[Any, str], Path]:
    """``screenshot(driver, "name")`` saves ``<XMR_SCREENSHOT_DIR>/name.png`` and returns the path."""
    folder = Path(os.environ.get("XMR_SCREENSHOT_DIR") or REPO / ".work" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def save(driver: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        driver.save_screenshot(str(path))
        return path

    return save
