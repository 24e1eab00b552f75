"""The web page in a real browser (Debian's chromium through playwright), on a server with --token: enter the token,
pick a persona, move its slider, generate; the meter's fixed scale, the server's caps, an adapter run side by side."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from conftest import random_vectors, tiny_backbone

from personactl.server import ServerSettings, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "browser-test-token-0123456789"

# As root (CI) `make test` installs chromium, so a missing one fails the tests below; another user's `make test`
# cannot install it and says so, and these tests skip.
if CHROMIUM is None and os.geteuid() != 0:
    pytest.skip("no chromium on PATH (make test installs it only as root): sudo apt-get install chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    from personactl.lora.direction import LoRADirection, LoRAFactors

    folder, adapters = random_vectors(tmp_path_factory.mktemp("vectors")), tmp_path_factory.mktemp("adapters")
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4.0, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    modules = {f"model.layers.{i}.self_attn.q_proj": LoRAFactors(torch.randn(2, 48) * 3, torch.randn(48, 2) * 3, 2.0) for i in range(3)}
    LoRADirection(modules, config, {"name": "arr", "base_model": "tiny-llama", "base_model_type": "llama"}).save(adapters / "arr")
    settings = ServerSettings(port=0, vectors=folder, adapters=adapters, token=TOKEN, max_tokens=48, batch_window_s=0.3)
    with running_server(tiny_backbone("llama"), settings) as served:
        yield served.url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "no chromium on PATH although running as root, where `make test` installs it: apt-get install chromium"
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _open(browser, page_url, **kw):
    """The page, reached without the token; the token typed into its settings field, then the personas reloaded."""
    page = browser.new_page(**kw)
    page.goto(page_url)
    page.wait_for_selector("#error:not([hidden])")
    assert "token" in page.inner_text("#error") and page.eval_on_selector("#settings", "d => d.open")
    page.fill("#token", TOKEN)
    page.click("#reload")
    page.wait_for_selector(".vector-pick[value=rand]")
    assert page.is_hidden("#error")
    return page


def test_the_page_steers_live_and_shows_the_meter_on_a_fixed_scale(browser, page_url, tmp_path):
    page = _open(browser, page_url, viewport={"width": 1280, "height": 800})
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.check(".vector-pick[value=rand]")
    page.fill(".coef-slider[data-name=rand]", "3")
    page.fill("#max-tokens", "16")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#meter .tok').length >= 8", timeout=60_000)
    page.wait_for_function("!document.querySelector('#generate').disabled", timeout=60_000)
    baseline, steered = page.inner_text("#baseline"), page.inner_text("#steered")
    assert steered.strip() and steered != baseline
    tokens = page.eval_on_selector_all("#meter .tok", "els => els.map(e => [parseFloat(e.dataset.value), e.style.background])")
    assert tokens and all(v == v for v, _ in tokens)  # numbers, not NaN
    # each token's colour depends on its own value only: -2..+2 in meter units (+1 the typical trait answer)
    expected = page.evaluate("values => values.map(v => meterColor(Math.max(-1, Math.min(1, v / 2))))", [v for v, _ in tokens])
    assert [colour for _, colour in tokens] == expected
    first = page.eval_on_selector("#meter .tok", "e => e.style.background")
    page.evaluate("() => { addMeterToken('a', {rand: 0.5}); addMeterToken('b', {rand: 40}); }")  # a later token rescales nothing
    assert page.eval_on_selector_all("#meter .tok", "els => els.slice(-2).map(e => e.style.background)") == [
        page.evaluate("meterColor(0.25)"),
        page.evaluate("meterColor(1)"),
    ]
    assert page.eval_on_selector("#meter .tok", "e => e.style.background") == first
    assert (page.inner_text("#legend-min"), page.inner_text("#legend-max")) == ("−2", "+2")
    assert "raw projection" in page.inner_text("#legend-text")  # this vector kept no answer projections
    assert page.is_hidden("#error") and not console_errors
    page.screenshot(path=str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_the_slider_shows_its_range_and_max_tokens_follows_the_servers_cap(browser, page_url):
    page = _open(browser, page_url)
    page.check(".vector-pick[value=rand]")
    range_text = page.inner_text(".coef-range[data-name=rand]")
    assert "−4 to 4" in range_text and "default range" in range_text
    assert page.get_attribute("#max-tokens", "max") == "48" and int(page.input_value("#max-tokens")) <= 48
    page.fill("#max-tokens", "49")
    page.click("#generate")
    assert "1 to 48" in page.inner_text("#error")


def test_with_an_adapter_baseline_and_steered_stream_side_by_side(browser, page_url):
    page = _open(browser, page_url)
    page.select_option("#adapter", "arr")
    page.fill("#max-tokens", "32")
    page.evaluate("""() => {
        window.seen = [];
        for (const id of ["baseline", "steered"]) {
            new MutationObserver(() => { if (!window.seen.includes(id + " text")) window.seen.push(id + " text"); })
                .observe(document.getElementById(id), { childList: true, characterData: true, subtree: true });
            new MutationObserver(() => { if (document.getElementById(id + "-status").textContent.startsWith("done")) window.seen.push(id + " done"); })
                .observe(document.getElementById(id + "-status"), { childList: true, characterData: true, subtree: true });
        }
    }""")
    page.click("#generate")
    page.wait_for_function("window.seen.filter(s => s.endsWith('done')).length == 2", timeout=60_000)
    seen = page.evaluate("window.seen")
    assert seen.index("steered text") < seen.index("baseline done") and seen.index("baseline text") < seen.index("steered done"), seen
    assert page.inner_text("#steered") != page.inner_text("#baseline") and page.is_hidden("#error")


def test_errors_show_in_the_page(browser, page_url):
    page = _open(browser, page_url)
    page.check(".vector-pick[value=rand]")
    page.fill(".layer-input[data-name=rand]", "9")  # out of range for a 3-block model
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.inner_text("#error").strip()
