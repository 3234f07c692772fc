"""The report in headless Chromium from file://: no errors, every image loads, the gallery reacts, no script runs
from the data. Uses Debian's /usr/bin/chromium (never downloads a browser); skipped when it is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrlens.run.layout import image_id
from tests.report.runs import EVIL_FILE, EVIL_FINDING, EVIL_PATIENT  # runs: tests/report/conftest.py

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield instance
        instance.close()


class Page:
    """A page opened from disk, recording console errors, page errors and dialogs."""

    def __init__(self, browser, index: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.goto(index.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def broken_images(self) -> list[str]:
        self.page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        self.page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        return self.page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")

    def choose(self, **values: str) -> None:
        for name, value in values.items():
            self.page.select_option(f"#g-{name}", value=value)

    def heat(self) -> str:
        return self.page.get_attribute("#g-heat", "src") or ""

    def info(self) -> str:
        return self.page.inner_text("#g-info")


def _gallery(index: Path) -> dict:
    html = index.read_text(encoding="utf-8")
    start = html.index('<script type="application/json" id="report-data">') + len(
        '<script type="application/json" id="report-data">'
    )
    return json.loads(html[start : html.index("</script>", start)])["gallery"]


def test_report_works_offline_and_the_gallery_reacts(browser, tiny_run):
    view = Page(browser, tiny_run.full)
    page = view.page
    assert view.broken_images() == []
    assert page.evaluate("document.querySelector('main > section').id") == "trust"  # section 0 comes first
    assert page.inner_text("nav.sections a[href='#trust']").strip() == "0. Can these numbers be trusted?"
    assert page.inner_text("nav.sections a[href='#dataset']").strip() == "1. Data"
    assert page.is_visible("#trust-verdict") and "flagged 1 finding(s)" in page.inner_text("#trust-verdict")
    assert page.locator("#trust img[src^='assets/trust/errors/']").count() == 1
    gallery = _gallery(tiny_run.full)
    maps = gallery["maps"]
    first = next(m for m in maps if m["model"] == "tiny" and m["method"] == "occlusion")
    other = next(m for m in maps if m["image"] == first["image"] and m["label"] == first["label"]
                 and m["model"] == "tiny" and m["method"] == "saliency")  # fmt: skip
    view.choose(image=first["image"], label=first["label"], model="tiny", method="occlusion")
    assert view.heat() == first["heat"] and page.is_visible("#g-heat")
    info = view.info()
    assert f"{first['probability']:.3f}" in info and "window=12" in info
    view.choose(method="saliency")
    assert view.heat() == other["heat"] != first["heat"]
    assert view.info() != info and f"{other['probability']:.3f}" in view.info()
    image = next(i for i in gallery["images"] if i["id"] != first["image"])
    view.choose(image=image["id"])
    assert image["filename"] in view.info() and page.get_attribute("#g-base", "src") == image["src"]

    view.choose(image=first["image"], model="ensemble", method="gradcam")  # not applicable to the ensemble
    assert page.is_hidden("#g-heat") and page.is_visible("#g-missing")
    assert "cannot explain the ensemble" in page.inner_text("#g-missing")
    assert "not computed" in page.inner_text("#g-info")
    assert "(not computed)" in page.inner_text("#g-method")
    view.choose(model="tiny", method="occlusion")
    assert page.is_visible("#g-heat") and page.is_hidden("#g-missing")

    opacity = "getComputedStyle(document.getElementById('g-heat')).opacity"
    assert page.evaluate(opacity) == "0.7"
    page.fill("#g-opacity", "25")
    assert page.evaluate(opacity) == "0.25" and page.inner_text("#g-opacity-value") == "25 %"
    assert page.locator("#g-figures img").count() >= 1  # the grid of this image and label
    assert view.broken_images() == []
    page.click("nav.sections a[href='#nap']")
    page.wait_for_function("window.scrollY > 0")

    ARTIFACTS.mkdir(exist_ok=True)
    page.fill("#g-opacity", "70")
    page.goto(tiny_run.full.resolve().as_uri() + "#gallery")
    page.wait_for_load_state("load")
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    assert view.errors == [] and view.dialogs == []
    view.context.close()


def test_hostile_names_show_as_text_and_never_run(browser, xss_run):
    view = Page(browser, xss_run.index)
    page = view.page
    assert view.broken_images() == []
    view.choose(image=image_id(EVIL_FILE), label=EVIL_FINDING, model="tiny", method="saliency")
    page.wait_for_timeout(200)
    info = view.info()
    assert EVIL_FILE in info and EVIL_PATIENT in info and EVIL_FINDING in info
    assert page.is_visible("#g-heat")
    assert EVIL_FILE in page.inner_text("#g-image")
    assert page.locator("#xai").get_by_text("<script>alert(2)</script>", exact=False).count() >= 1
    assert "<script>alert(4)</script> is confounded with <b>source</b>" in page.inner_text("#trust-verdict")
    assert page.locator("#trust").get_by_text("<img src=x onerror=alert(5)>", exact=False).count() >= 1
    assert page.locator("#trust").get_by_text("images/<script>alert(6)</script>.png", exact=False).count() >= 1
    assert page.title() == 'cxrlens report: <script>alert("name")</script>'
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-xss.png"))
    assert view.dialogs == [], view.dialogs
    assert view.errors == [], view.errors
    view.context.close()
