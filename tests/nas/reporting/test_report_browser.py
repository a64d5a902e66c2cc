"""The report in a real browser (headless Debian ``chromium``): no console error, every image
decoded, a screenshot of the expected size. Slow tier:
``pytest -m slow tests/nas/reporting/test_report_browser.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chromium_cdp import Browser, find_chromium, screenshot

from nas import report
from nas.cli import run

pytestmark = pytest.mark.slow

# decode() every <img>: resolves with its natural size, or the reason it could not be decoded
IMAGES_JS = """Promise.all(Array.from(document.images).map(i => i.decode().then(
  () => ({src: i.getAttribute('src').slice(0, 40), w: i.naturalWidth, h: i.naturalHeight}),
  e => ({src: i.getAttribute('src').slice(0, 40), w: 0, h: 0, error: String(e)}))))
  .then(r => JSON.stringify(r))"""


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium, or set NAS_CHROMIUM)")
    b = Browser(binary)
    yield b
    b.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke search's full report (images embedded) and its log-only report (images linked)."""
    from nas.evolve import main as evolve

    parent = tmp_path_factory.mktemp("browser")
    assert evolve(["--preset", "smoke", "--run-dir", str(parent), "--name", "smoke",
                   "--no-progress",
                   "--generations", "1"]) == 0
    run_dir = parent / "smoke"
    full, linked = parent / "full", parent / "linked"
    assert run(report.main,
               [str(run_dir), "--out", str(full), "--ig-images", "2", "--ig-steps", "8",
                             "--attacks", "fgsm", "--no-progress"]) == 0
    assert run(report.main,
               [str(run_dir), "--out", str(linked), "--no-models", "--link-images"]) == 0
    return {"full": full, "linked": linked}


@pytest.mark.parametrize("kind", ["full", "linked"])
def test_report_renders_in_chromium(browser, reports, kind, tmp_path):
    page = reports[kind] / "index.html"
    before = len(browser.events)
    session = browser.open(page.resolve().as_uri())
    images = json.loads(browser.send("Runtime.evaluate",
                                     {"expression": IMAGES_JS, "awaitPromise": True,
                                      "returnByValue": True},
                                     session=session)["result"]["value"])
    n_html = page.read_text().count("<img ")
    assert len(images) == n_html >= 5
    assert [i for i in images if i["w"] <= 0 or i["h"] <= 0] == []  # every <img> decoded
    browser.events[:before] = []  # errors of this page only
    assert browser.errors() == []
    size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
    width, height = screenshot(browser, session, tmp_path / f"{kind}.png")
    # a page of several sections with figures: wider than nothing, taller than one screen
    assert size["height"] > 900 and size["width"] >= 600
    assert abs(width - size["width"]) <= 2 and abs(height - size["height"]) <= 2


def test_the_check_sees_a_missing_image_and_a_console_error(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img src="missing.png" alt="x">'
                    '<script>console.error("boom")</script>'
                    "</body></html>")
    before = len(browser.events)
    session = browser.open(page.as_uri())
    images = json.loads(browser.send("Runtime.evaluate",
                                     {"expression": IMAGES_JS, "awaitPromise": True,
                                      "returnByValue": True},
                                     session=session)["result"]["value"])
    assert images[0]["w"] == 0 and "error" in images[0]
    browser.events[:before] = []
    errors = browser.errors()
    assert any("boom" in e for e in errors) and any("missing.png" in e for e in errors)
