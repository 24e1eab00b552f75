#!/usr/bin/env python
"""Screenshot RUN_DIR/report.html with headless Debian chromium and check it is not blank.

    python scripts/screenshot_report.py runs/demo [--out report.png] [--height 2000]

Chromium runs offline-minded (no background networking, no component updates,
a throw-away profile), so a report that needed the network would show it.
Prints the PNG path; exits 2 with one line when something is wrong.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MIN_COLOURS = 16  # a rendered report with figures has hundreds; a blank page has 1-2


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no chromium found: apt-get install -y chromium")


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 2000, timeout: float = 90.0) -> Path:
    """Render `html` in headless chromium into the PNG `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    with tempfile.TemporaryDirectory(prefix="personactl-chromium-") as profile:
        command = [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            html.resolve().as_uri(),
        ]
        env = dict(os.environ, HOME=profile)  # keep chromium's caches out of the real home
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"chromium did not finish within {timeout:.0f} s") from None
    if not out.is_file() or out.stat().st_size == 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"chromium wrote no screenshot (exit {proc.returncode}): {' | '.join(tail)}")
    return out


def distinct_colours(png: Path) -> tuple[int, float]:
    """(number of distinct RGB colours, share of the most common colour)."""
    try:
        from PIL import Image

        with Image.open(png) as image:
            rgb = image.convert("RGB")
            colours = rgb.getcolors(maxcolors=rgb.width * rgb.height)
        total = sum(count for count, _ in colours)
        return len(colours), max(count for count, _ in colours) / total
    except ImportError:
        import matplotlib.image
        import numpy as np

        pixels = (matplotlib.image.imread(png)[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
        _, counts = np.unique(pixels, axis=0, return_counts=True)
        return len(counts), counts.max() / counts.sum()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder holding report.html")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default RUN_DIR/report.png)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)

    html = args.run_dir / "report.html"
    if not html.is_file():
        print(f"error: no report.html in {args.run_dir}: run personactl.report.write_report on it first", file=sys.stderr)
        return 2
    try:
        png = screenshot(html, args.out or args.run_dir / "report.png", args.width, args.height)
    except SystemExit as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    colours, dominant = distinct_colours(png)
    if colours < MIN_COLOURS or dominant > 0.995:
        print(f"error: {png} looks blank ({colours} colours, {dominant:.1%} one colour)", file=sys.stderr)
        return 2
    print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
