"""The main job on the embedded model: extract a trait and show steered answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .extraction import ExtractionSettings, extract, save_pairs
from .generation import chat_prompt, generate
from .models import Backbone
from .steering import SteeringTerm
from .traits import load_trait

DEMO_COEFS = (0.0, 2.0, 4.0)
DEMO_DEPTH = 0.3  # relative depth of the steered layer until layer selection picks it


@dataclass
class DemoResult:
    """Answers per evaluation question, one per coefficient, and the files written."""

    layer: int
    coefs: tuple[float, ...]
    answers: dict[str, list[str]] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


def run_demo(backbone: Backbone, out_dir: Path, trait_name: str = "pirate", n_questions: int = 3) -> DemoResult:
    """Extract `trait_name`, then answer held-out questions at each demo coefficient in one batch."""
    trait = load_trait(trait_name)
    vector, pairs = extract(backbone, trait, ExtractionSettings(n_questions=10, max_new_tokens=40, batch_size=25))
    written = [vector.save(out_dir / f"{trait.name}.safetensors"), save_pairs(pairs, out_dir / f"{trait.name}.pairs.jsonl")]
    layer = max(1, round(DEMO_DEPTH * backbone.n_layers))
    questions = trait.eval_questions[:n_questions]
    coefs = [c for _ in questions for c in DEMO_COEFS]
    answers = generate(
        backbone,
        [chat_prompt(q) for q in questions for _ in DEMO_COEFS],
        steering=[SteeringTerm(vector, layer, coefs)],
        max_new_tokens=48,
        batch_size=len(coefs),
    )
    k = len(DEMO_COEFS)
    by_question = {q: answers[i * k : (i + 1) * k] for i, q in enumerate(questions)}
    return DemoResult(layer, DEMO_COEFS, by_question, written)
