"""The web page in a real browser (Debian's chromium through playwright): pick a persona, move its slider, generate."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import tiny_backbone

from personactl import PersonaVector
from personactl.server import ServerSettings, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vectors")
    torch.manual_seed(1)
    PersonaVector(torch.randn(4, 48) * 4, trait="random").save(folder / "rand.safetensors")
    with running_server(tiny_backbone("llama"), ServerSettings(port=0, vectors=folder)) as served:
        yield served.url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "no chromium on PATH: `make test` installs it (apt-get install -y chromium)"
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_the_page_steers_live_and_shows_the_meter(browser, page_url, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.goto(page_url)
    page.wait_for_selector(".vector-pick[value=rand]")
    page.check(".vector-pick[value=rand]")
    page.fill(".coef-slider[data-name=rand]", "3")
    page.fill("#max-tokens", "16")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#meter .tok').length >= 8", timeout=60_000)
    page.wait_for_function("!document.querySelector('#generate').disabled", timeout=60_000)
    baseline, steered = page.inner_text("#baseline"), page.inner_text("#steered")
    assert steered.strip() and steered != baseline
    values = page.eval_on_selector_all("#meter .tok", "els => els.map(e => parseFloat(e.dataset.value))")
    assert values and all(v == v for v in values)  # numbers, not NaN
    assert page.is_hidden("#error") and not console_errors
    page.screenshot(path=str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_errors_show_in_the_page(browser, page_url):
    page = browser.new_page()
    page.goto(page_url)
    page.wait_for_selector(".vector-pick[value=rand]")
    page.check(".vector-pick[value=rand]")
    page.fill(".layer-input[data-name=rand]", "9")  # out of range for a 3-block model
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.inner_text("#error").strip()
