"""Every non-module file under src/personactl is listed in pyproject's package-data, so a wheel ships it."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "personactl"


def test_every_data_file_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["personactl"]
    listed = {Path(p) for pattern in patterns for p in glob.glob(pattern, root_dir=PACKAGE, recursive=True) if (PACKAGE / p).is_file()}
    files = {p.relative_to(PACKAGE) for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert Path("templates/report.html.j2") in files and Path("server/static/index.html") in files
    assert files - listed == set()
