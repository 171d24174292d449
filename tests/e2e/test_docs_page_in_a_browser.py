"""/docs renders the API's operations in a real browser that can reach nothing but the API."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orders_api.settings.shared import Settings
from tests.e2e.live_server import live_api

pytestmark = pytest.mark.e2e

#: Debian's Chromium (`make test` installs it); no other browser can be downloaded here.
CHROMIUM = "/usr/bin/chromium"
#: Milliseconds of page time Chromium gives the page to load its script, fetch the document and render.
VIRTUAL_TIME_BUDGET_MS = 15_000
#: Seconds of real time the whole browser run may take on a busy machine.
BROWSER_TIMEOUT_S = 120


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    with live_api(settings) as url:
        yield url


def rendered_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` after its scripts ran, from headless Chromium that can resolve no host.

    Every name but 127.0.0.1 fails to resolve, so a page that needed a CDN would render nothing:
    the page must work from what the API serves alone.
    """
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_docs_page_renders_the_place_an_order_operation(base_url: str, tmp_path: Path) -> None:
    dom = rendered_dom(f"{base_url}/docs", tmp_path / "chromium-profile")

    # Swagger UI's markup for an operation: a block per operation, its method and its path.
    assert 'id="operations-orders-createOrder"' in dom, dom[-3000:]
    assert "opblock-post" in dom
    assert 'data-path="/orders"' in dom
    assert 'data-path="/orders/{order_id}"' in dom
    assert "Place an order" in dom
    assert "Failed to load API definition" not in dom
