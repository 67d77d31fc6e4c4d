"""``/api/docs`` in a real browser: Debian's Chromium, headless, with every host but this server unreachable, loads
the page, runs Swagger UI from the files this server serves, and shows the staff API's operations. The check reads
the page's DOM once the scripts have run (``--dump-dom``), not pixels."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from flask import Flask

from tests.webserver import serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/ensure-test-servers "
                                               "installs it where it can)")
def test_the_docs_page_shows_the_operations_with_no_network(app: Flask, database_url: str) -> None:
    if "postgresql" in database_url:
        pytest.skip("the page does not depend on the database; run once")
    assert CHROMIUM is not None
    with serving(app) as base:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             # every other host is unreachable: the page must need nothing but this server
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=15000", "--dump-dom", f"{base}/api/docs"],
            capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert done.returncode == 0 and "swagger-ui" in dom, done.stderr[-2000:]
    assert 'class="swagger-ui' in dom  # Swagger UI rendered itself (its root element carries this class)
    assert "DUI staff API" in dom
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/api/residents", "/api/residents/{rid}/vital-signs", "/api/devices/events",
            "/api/alerts/stream"} <= paths, sorted(paths)
    assert "My residents now, with what needs attention" in dom
