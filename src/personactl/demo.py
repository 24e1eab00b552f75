"""The main job on the embedded model: two traits extracted, a layer chosen, a sweep judged, a report.

For each demo trait: extract the persona vector, pick the layer by measured
effect, sweep coefficients over the held-out questions with the offline judge
(two sampled answers each), and write `runs/demo-<trait>/report.html`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .evaluate import SweepConfig
from .experiment import RunResult, run
from .models import Backbone

DEMO_TRAITS = ("pirate", "silly")
DEMO_COEFS = [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]


def demo_config(trait: str) -> SweepConfig:
    """The sweep the demo runs for one trait."""
    return SweepConfig(
        name=f"demo-{trait}", trait=trait, methods=["vector"], layers="auto", coefs=DEMO_COEFS,
        samples=2, temperature=0.7, judge="embed", extraction_questions=12,
    )


@dataclass
class Margin:
    """Does the trait at +2 beat the trait at 0 beyond both confidence intervals?"""

    at_zero: dict[str, Any]
    at_two: dict[str, Any]

    @property
    def clear(self) -> bool:
        return self.at_two["trait_lo"] > self.at_zero["trait_hi"]

    def describe(self) -> str:
        z, t = self.at_zero, self.at_two
        verdict = "clear rise" if self.clear else "NO clear rise"
        return (
            f"trait at +2: {t['trait_mean']:.1f} [{t['trait_lo']:.1f}, {t['trait_hi']:.1f}] vs at 0: "
            f"{z['trait_mean']:.1f} [{z['trait_lo']:.1f}, {z['trait_hi']:.1f}] -> {verdict}"
        )


def margin(result: RunResult, method: str = "vector") -> Margin:
    rows = {row["coef"]: row for row in result.summary if row["method"] == method}
    return Margin(rows[0.0], rows[2.0])


def run_demo(backbone: Backbone, out_dir: str | Path = "runs", traits: Sequence[str] = DEMO_TRAITS) -> list[RunResult]:
    """Run (or resume) the demo sweep of every trait in `traits`."""
    return [run(demo_config(trait), out_dir, backbone=backbone) for trait in traits]
