"""The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, via
Selenium): charts drawn per version, one-click rollback through the admin API, and a
screenshot whose chart area holds each version's colour.

The screenshot is kept as a CI artifact (tests/fixtures/browser.py: $RLGW_ARTIFACTS, else out/artifacts/).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth import KeyStore
from tests.fixtures.browser import keep_screenshot
from tests.fixtures.upstream import FakeServer, GatewayServer, gateway_settings, start_gateway, stop_gateway

pytestmark = pytest.mark.integration

VERSION_COLORS = {"base": (0x2F, 0x6F, 0xDE), "v1": (0xE0, 0x74, 0x2B)}  # first two of the page's palette


@pytest.fixture
def scored_gateway(tmp_path: Path, fake_upstream: FakeServer) -> Iterator[tuple[GatewayServer, str]]:
    settings = gateway_settings(tmp_path, [fake_upstream.url])
    admin_key = KeyStore(settings.keys_path).create("ops", admin=True)
    gw = start_gateway(settings)
    auth = {"Authorization": f"Bearer {admin_key}"}
    r = httpx.post(
        gw.root + "/admin/versions", json={"version": "v1", "adapter_path": "/tmp/v1"}, headers=auth
    )
    assert r.status_code == 200 and r.json()["status"] == "canary", r.text
    reg, now = gw.services.versions, time.time()
    for b in range(10):  # ten 30 s buckets over the default 15 min window, 6 episodes each
        at = now - 300 + 30 * b
        for i in range(6):
            reg.stats.rewards["base"][f"b{b}-{i}"] = (at, 0.3 + 0.02 * b + 0.1 * (i % 3))
            reg.stats.rewards["v1"][f"c{b}-{i}"] = (at, 0.5 + 0.03 * b + 0.15 * (i % 2))
            reg.stats.add_request("base", True, 20.0 + i, at)
            if i < 3:  # the canary gets fewer requests, an error every third bucket
                reg.stats.add_request("v1", i != 2 or b % 3 != 0, 25.0 + i, at)
    yield gw, admin_key
    stop_gateway(gw)


def _chart_pixels(png: bytes, rect: dict[str, float], ratio: float) -> tuple[int, dict[str, int]]:
    """(non-white pixels, pixels near each version's colour) inside the chart's box."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    box = tuple(
        int(v * ratio) for v in (rect["x"], rect["y"], rect["x"] + rect["width"], rect["y"] + rect["height"])
    )
    pixels = list(img.crop(box).getdata())  # type: ignore[arg-type]
    near = {
        name: sum(1 for p in pixels if sum(abs(a - b) for a, b in zip(p, rgb, strict=True)) < 40)
        for name, rgb in VERSION_COLORS.items()
    }
    return sum(1 for p in pixels if p != (255, 255, 255)), near


def test_dashboard_draws_versions_and_rolls_back(
    browser: Any, scored_gateway: tuple[GatewayServer, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gw, admin_key = scored_gateway
    wait = WebDriverWait(browser, 30)
    browser.get(f"{gw.root}/dashboard?key={admin_key}")
    for vid in ("base", "v1"):
        line = f'#reward-chart path.line[data-version="{vid}"]'
        wait.until(lambda d, css=line: d.find_elements(By.CSS_SELECTOR, css))  # type: ignore[misc]
        dots = browser.find_elements(By.CSS_SELECTOR, f'#reward-chart circle.pt[data-version="{vid}"]')
        assert len(dots) == 10, f"{vid}: {len(dots)} reward points"
        assert browser.find_elements(By.CSS_SELECTOR, f'#reward-chart polygon.band[data-version="{vid}"]')
        assert browser.find_elements(By.CSS_SELECTOR, f'#traffic-chart path.line[data-version="{vid}"]')
        d = browser.find_element(By.CSS_SELECTOR, line)
        assert d.get_attribute("d").count("L") == 9
    assert "key=" not in browser.current_url  # the page took the key out of the address bar
    assert browser.find_element(By.ID, "canary").text == "v1"

    browser.find_element(By.CSS_SELECTOR, 'button[data-action="rollback"][data-version="v1"]').click()
    auth = {"Authorization": f"Bearer {admin_key}"}
    wait.until(lambda _: httpx.get(gw.root + "/admin/versions", headers=auth).json()["canary"] is None)
    listing = httpx.get(gw.root + "/admin/versions", headers=auth).json()
    assert next(v for v in listing["versions"] if v["id"] == "v1")["status"] == "rolled_back"
    wait.until(lambda d: d.find_element(By.ID, "canary").text == "none")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-version="v1"] td.status-rolled_back')
    assert row.text == "rolled_back"
    decisions = browser.find_element(By.CSS_SELECTOR, "#decisions tbody").text
    assert "dashboard: operator rollback" in decisions

    png = browser.get_screenshot_as_png()
    keep_screenshot(png, "dashboard.png")
    ratio = float(browser.execute_script("return window.devicePixelRatio") or 1)
    chart = browser.find_element(By.ID, "reward-chart")
    painted, near = _chart_pixels(png, chart.rect, ratio)
    area = chart.rect["width"] * chart.rect["height"] * ratio * ratio
    print(f"reward chart: {painted} of {int(area)} pixels painted, per version colour {near}")
    assert painted > 0.02 * area, "the reward chart is (nearly) blank"
    assert all(n > 200 for n in near.values()), f"a version's line is missing from the chart: {near}"
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"the page logged errors (a CSP violation, a failed load): {severe}"
