"""Screen training data before fine-tuning: which samples would push the model toward a trait.

For each (prompt, response) sample, the projection of the dataset's response
onto the persona vector (mean over its tokens, at one layer) is compared with
the projection of the model's own greedy response to the same prompt; their
gap (the projection difference, Chen et al.) says how far the sample pulls the
model toward the trait. The dataset's score is the mean gap, with a bootstrap
CI that says whether the data can conclude anything.

Cost: one batched greedy generation (cached in an `AnswerCache`, so a re-run
or another dataset with the same prompts pays nothing) and one capture pass
without logits over both answer sets, stopped after the screened layer and
batched by length.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import activations
from ._io import atomic_path, check_replaceable, write_text_atomic
from ._plot import data_uri
from .intervals import mean_ci
from .generation import chat_prompt, format_prompts, generate
from .lora.adapters import PersonaData
from .models import Backbone
from .progress import progress_bar
from .vectors import PersonaVector

SCREEN = "screen.jsonl"
ANSWERS = "model_answers.jsonl"
PAGE_SAMPLES = 20  # flagged samples listed on the HTML page


class AnswerCache:
    """The model's own greedy answers, keyed by (model name, formatted prompt, answer length), in one JSONL file.

    Appended batch by batch, so a screening that is killed resumes where it stopped."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.answers: dict[str, str] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.answers[row["key"]] = row["answer"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a kill: its answer is generated again

    @staticmethod
    def key(model: str, prompt: str, max_new_tokens: int) -> str:
        return hashlib.sha256(json.dumps([model, prompt, max_new_tokens]).encode()).hexdigest()

    def add(self, keys: Sequence[str], answers: Sequence[str]) -> None:
        self.answers.update(zip(keys, answers))
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps({"key": k, "answer": a}) + "\n" for k, a in zip(keys, answers)))


def own_answers(backbone: Backbone, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
                cache: AnswerCache | None = None) -> list[str]:
    """The model's greedy answers to formatted `prompts`; only those missing from `cache` are generated."""
    cache = cache if cache is not None else AnswerCache()
    keys = [AnswerCache.key(backbone.name, p, max_new_tokens) for p in prompts]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache.answers}.values())
    with progress_bar("model's own answers", len(missing)) as advance:
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            answers = generate(backbone, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens, batch_size=batch_size)
            cache.add([keys[i] for i in chunk], answers)
            advance(len(chunk))
    return [cache.answers[k] for k in keys]


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


def conclusion(mean: float | None, low: float | None, high: float | None) -> str:
    """What the mean projection difference and its 95% CI allow one to say about the dataset."""
    if mean is None or low is None or high is None or math.isnan(low):
        return "cannot conclude: no sample could be scored"
    if low > 0:
        return "pushes toward the trait: the 95% CI of the mean difference lies above 0"
    if high < 0:
        return "pushes away from the trait: the 95% CI of the mean difference lies below 0"
    return "cannot conclude: the 95% CI of the mean difference includes 0"


def screen(backbone: Backbone, data: PersonaData, vector: PersonaVector, layer: int, *, max_new_tokens: int = 64,
           batch_size: int = 16, cache: AnswerCache | None = None) -> Screening:
    """Projection difference of every sample at `layer` (see the module docstring)."""
    vector.check_compatible(backbone)
    backbone.check_layer(layer, allow_embedding=False)
    prompts = format_prompts(backbone, [chat_prompt(q) for q in data.questions])
    own = own_answers(backbone, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, cache=cache)
    texts = list(data.answers) + own
    kept = [i for i, text in enumerate(texts) if text.strip()]  # an empty answer has no tokens to average: no projection
    with progress_bar("capture both answer sets", len(kept)) as advance:
        acts = activations.collect_layer(backbone, [(prompts + prompts)[i] for i in kept], [texts[i] for i in kept], layer,
                                         positions="response_avg", batch_size=batch_size, on_batch=advance)
    values = [math.nan] * len(texts)
    for i, value in zip(kept, (acts @ vector.unit(layer)).tolist()):
        values[i] = value
    n = len(prompts)
    rows = []
    for i in range(n):
        data_p, own_p = _value(values[i]), _value(values[n + i])
        rows.append({"index": i, "prompt": data.questions[i][:200], "data_projection": data_p, "model_projection": own_p,
                     "difference": None if data_p is None or own_p is None else data_p - own_p,
                     "data_answer": data.answers[i], "model_answer": own[i]})
    differences = [r["difference"] for r in rows if r["difference"] is not None]
    mean, low, high = (mean_ci(differences) if differences else (None, None, None))
    summary = {"trait": vector.trait, "model": backbone.name, "vector": vector.fingerprint(), "layer": layer, "n": n,
               "scored": len(differences), "mean_difference": mean, "mean_difference_ci": [low, high],
               "positive_share": sum(d > 0 for d in differences) / len(differences) if differences else None,
               "conclusion": conclusion(mean, low, high), "max_new_tokens": max_new_tokens, "data_sha256": data.sha256}
    return Screening(rows, summary)


def histogram(result: Screening, path: str | Path) -> Path:
    """PNG histogram of the per-sample projection differences, with the mean and zero marked."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    differences = [r["difference"] for r in result.rows if r["difference"] is not None]
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.hist(differences, bins=max(5, min(40, len(differences) // 3 or 1)), color="C0", alpha=0.8)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    if differences:
        ax.axvline(result.summary["mean_difference"], color="C3", lw=1.2, label=f"mean {result.summary['mean_difference']:+.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"projection difference onto '{result.summary['trait']}' at layer {result.summary['layer']} (data - model)")
    ax.set_ylabel("samples")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Screening: {{ s.trait }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:14px;width:100%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;white-space:nowrap}img{max-width:100%}.note{background:#fff7e0;padding:8px 12px}</style></head>
<body><h1>Screening for '{{ s.trait }}' ({{ s.model }}, layer {{ s.layer }})</h1>
<p class="note">{{ s.scored }} of {{ s.n }} samples scored; mean projection difference {{ "%+.3f"|format(s.mean_difference) }}
(95% CI {{ "%+.3f"|format(s.mean_difference_ci[0]) }} .. {{ "%+.3f"|format(s.mean_difference_ci[1]) }});
{{ "%.0f"|format(100 * s.positive_share) }}% of samples project above the model's own answer. Verdict: {{ s.conclusion }}.</p>
<img src="{{ figure }}" alt="histogram of projection differences">
<h2>The {{ rows|length }} most trait-inducing samples</h2>
<table><thead><tr><th>#</th><th>difference</th><th>prompt</th><th>dataset answer</th><th>model's own answer</th></tr></thead><tbody>
{% for r in rows %}<tr><td class="n">{{ r.index }}</td><td class="n">{{ "%+.3f"|format(r.difference) }}</td><td>{{ r.prompt }}</td>
<td>{{ r.data_answer }}</td><td>{{ r.model_answer }}</td></tr>
{% endfor %}</tbody></table></body></html>
"""


def write_screening(result: Screening, out_dir: str | Path) -> Path:
    """screen.jsonl (ranked), summary.json, histogram.png and screen.html in `out_dir`."""
    from jinja2 import Environment  # noqa: PLC0415

    out = check_replaceable(out_dir, (SCREEN, ANSWERS))
    out.mkdir(parents=True, exist_ok=True)
    ranked = result.ranked()
    write_text_atomic(out / SCREEN, "".join(json.dumps(r) + "\n" for r in ranked))
    write_text_atomic(out / "summary.json", json.dumps(result.summary, indent=2))
    figure = histogram(result, out / "histogram.png")
    if result.summary["scored"]:
        top = [r for r in ranked if r["difference"] is not None][:PAGE_SAMPLES]
        page = Environment(autoescape=True).from_string(_PAGE).render(s=result.summary, rows=top, figure=data_uri(figure))
        write_text_atomic(out / "screen.html", page)
    return out


def write_without(data: PersonaData, removed: set[int], path: str | Path) -> Path:
    """The dataset minus the `removed` samples, as JSONL {"instruction", "output"}."""
    lines = [json.dumps({"instruction": q, "output": a}) + "\n" for i, (q, a) in enumerate(zip(data.questions, data.answers)) if i not in removed]
    return write_text_atomic(path, "".join(lines))
