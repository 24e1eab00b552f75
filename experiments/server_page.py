"""A screenshot of the web page steering SmolLM2 with a pirate vector (docs/server_page.png, shown in the README).

Needs a pirate vector: run `personactl demo` first (it writes runs/demo-pirate/vector.safetensors and layers.json).
Run: .venv/bin/python experiments/server_page.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from personactl import load_model
from personactl.server import ServerSettings, running_server

RUN = Path("runs/demo-pirate")
OUT = Path("docs/server_page.png")


def main() -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(RUN / "vector.safetensors", Path(folder) / "pirate.safetensors")
        shutil.copy(RUN / "layers.json", Path(folder) / "pirate.layers.json")
        settings = ServerSettings(port=0, vectors=Path(folder))
        with running_server(load_model("smollm2-135m"), settings) as served, sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(served.url)
            page.check(".vector-pick[value=pirate]")
            page.fill(".coef-slider[data-name=pirate]", "1.5")
            page.fill("#prompt", "How should I spend a rainy Sunday?")
            page.fill("#max-tokens", "64")
            page.click("#generate")
            page.wait_for_function("!document.querySelector('#generate').disabled", timeout=300_000)
            page.screenshot(path=str(OUT))
            print(f"baseline: {page.inner_text('#baseline')!r}\nsteered: {page.inner_text('#steered')!r}\nwritten to {OUT}")
            browser.close()


if __name__ == "__main__":
    main()
