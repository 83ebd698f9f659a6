"""Without a browser the page's tests are skipped locally and fail under XMR_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("required", "outcome"), [("1", "1 error"), ("0", "1 skipped")])
def test_a_missing_browser_skips_or_fails(required: str, outcome: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "XMR_CHROMIUM": str(tmp_path / "no-chromium"),
        "XMR_REQUIRE_SERVICES": required,
        "XMR_SCREENSHOT_DIR": str(tmp_path / "shots"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/web/test_page.py",
            "-k",
            "bad_api_key",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert outcome in out, out
    assert "headless browser missing" in out and "scripts/browser.sh install" in out, out
    assert done.returncode == (1 if required == "1" else 0), out
