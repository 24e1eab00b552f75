"""One small figure shape used by several commands: two stacked panels over a shared x axis."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from ._io import atomic_path


def two_panels(
    path: str | Path,
    title: str,
    xs: Sequence[float],
    top: tuple[Sequence[float], str],
    bottom: tuple[Sequence[float], str],
    xlabel: str,
    zero_line: bool = False,
) -> Path:
    """Write a PNG with `top` and `bottom` (values, y label) plotted against `xs`."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(8.5, 5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, (values, label), color in zip(axes, (top, bottom), ("C0", "C3")):
        ax.plot(list(xs), list(values), marker="o", ms=3, lw=1, color=color)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if zero_line:
        axes[1].axhline(0, color="grey", lw=0.8, ls=":")
    axes[0].set_title(title)
    axes[1].set_xlabel(xlabel)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def data_uri(path: str | Path) -> str:
    """A PNG file as a data: URI, so an HTML report is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
