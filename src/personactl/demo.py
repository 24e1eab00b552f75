"""The main job on the embedded model: two traits extracted, a layer chosen, a sweep judged, a report.

For each demo trait: extract the persona vector, pick the layer by measured
effect, sweep coefficients over the held-out questions with the offline judge
(two sampled answers each), and write `runs/demo-<trait>/report.html`. Steering
acts on `response` positions (the last prompt token and every new one), as
persona_vectors evaluates, so each question's prompt is prefilled once for
all its coefficients.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .evaluate import SweepConfig
from .experiment import RunResult, run
from .models import Backbone

DEMO_TRAITS = ("pirate", "silly")
DEMO_COEFS = [-2.0, 0.0, 1.0, 2.0, 3.0]


def demo_config(trait: str) -> SweepConfig:
    """The sweep the demo runs for one trait."""
    return SweepConfig(
        name=f"demo-{trait}",
        trait=trait,
        methods=["vector"],
        layers="auto",
        coefs=DEMO_COEFS,
        samples=1,  # intervals are over the 12 questions; a second sample per question cost 30 s of the 2-minute demo
        temperature=0.7,
        judge="embed",
        extraction_questions=10,
        positions="response",
        batch_size=128,  # the layer probe (4 questions x 31 rows) and the sweep (120 rows) each in one batch
    )


def run_demo(backbone: Backbone, out_dir: str | Path = "runs", traits: Sequence[str] = DEMO_TRAITS) -> list[RunResult]:
    """Run (or resume) the demo sweep of every trait in `traits`."""
    return [run(demo_config(trait), out_dir, backbone=backbone) for trait in traits]
