"""Screen training data before fine-tuning: which samples would push the model toward a trait.

For each (prompt, response) sample, the projection of the dataset's response
onto the persona vector (mean over its tokens, at one layer) is compared with
the projection of the model's own greedy response to the same prompt; their
gap (the projection difference, Chen et al.) says how far the sample pulls the
model toward the trait. The dataset's score is the mean gap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from . import activations
from ._io import check_replaceable, write_text_atomic
from .generation import chat_prompt, format_prompts, generate
from .lora.adapters import PersonaData
from .models import Backbone
from .monitor import projections
from .vectors import PersonaVector

SCREEN = "screen.jsonl"


@dataclass
class Screening:
    """Per-sample projections and differences (dataset order) and the dataset-level summary."""

    rows: list[dict]
    summary: dict

    def ranked(self) -> list[dict]:
        """Samples from the most trait-inducing down (samples without a difference last)."""
        return sorted(self.rows, key=lambda r: -math.inf if r["difference"] is None else r["difference"], reverse=True)

    def flagged(self, top_percent: float) -> set[int]:
        """Indices of the top `top_percent` % samples by projection difference."""
        count = math.ceil(len(self.rows) * top_percent / 100)
        return {r["index"] for r in self.ranked()[:count] if r["difference"] is not None}


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def screen(backbone: Backbone, data: PersonaData, vector: PersonaVector, layer: int, *, max_new_tokens: int = 64,
           batch_size: int = 16) -> Screening:
    """One batched greedy generation (the model's own answers) and one capture pass over both answer sets."""
    vector.check_compatible(backbone)
    backbone.check_layer(layer, allow_embedding=False)
    prompts = format_prompts(backbone, [chat_prompt(q) for q in data.questions])
    own = generate(backbone, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    acts = activations.collect(backbone, prompts + prompts, list(data.answers) + own, positions="response_avg", batch_size=batch_size)
    values = projections(acts, vector, [layer])[:, 0].tolist()
    n = len(prompts)
    rows = []
    for i in range(n):
        data_p, own_p = _value(values[i]), _value(values[n + i])
        rows.append({"index": i, "prompt": data.questions[i][:200], "data_projection": data_p, "model_projection": own_p,
                     "difference": None if data_p is None or own_p is None else data_p - own_p, "model_answer": own[i]})
    differences = [r["difference"] for r in rows if r["difference"] is not None]
    summary = {"trait": vector.trait, "layer": layer, "n": n, "scored": len(differences),
               "mean_difference": sum(differences) / len(differences) if differences else None,
               "positive_share": sum(d > 0 for d in differences) / len(differences) if differences else None}
    return Screening(rows, summary)


def write_screening(result: Screening, out_dir: str | Path) -> Path:
    """screen.jsonl (ranked) and summary.json in `out_dir`."""
    out = check_replaceable(out_dir, SCREEN)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SCREEN, "".join(json.dumps(r) + "\n" for r in result.ranked()))
    write_text_atomic(out / "summary.json", json.dumps(result.summary, indent=2))
    return out


def write_without(data: PersonaData, removed: set[int], path: str | Path) -> Path:
    """The dataset minus the `removed` samples, as JSONL {"instruction", "output"}."""
    lines = [json.dumps({"instruction": q, "output": a}) + "\n" for i, (q, a) in enumerate(zip(data.questions, data.answers)) if i not in removed]
    return write_text_atomic(path, "".join(lines))
