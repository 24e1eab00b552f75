"""Screen training data before fine-tuning: which samples would push the model toward a trait.

For each (prompt, response) sample, the projection of the dataset's response
onto the persona vector (mean over its tokens, at one layer) is compared with
the projection of the model's own greedy response to the same prompt; their
gap (the projection difference, Chen et al.) says how far the sample pulls the
model toward the trait. The dataset's score is the mean gap over prompts (the
samples of one prompt share the model's answer, so they are averaged first),
with a Student t CI over prompts that says whether the data can conclude
anything. Samples that cannot be scored keep a row that says why, and a
filtered copy of the data keeps every line it does not flag, byte for byte.

Cost: one batched greedy generation (cached in an `AnswerCache`, so a re-run
or another dataset with the same prompts pays nothing) and one capture pass
without logits over both answer sets, stopped after the screened layer and
batched by length.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import activations
from ._io import atomic_path, check_replaceable, write_text_atomic
from ._plot import data_uri
from .capture import capture_for
from .errors import PersonactlError
from .generation import chat_prompt, format_prompts, generate
from .intervals import mean_ci
from .lora.adapters import MAX_RECORD_CHARS, PersonaData
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


def own_answers(
    backbone: Backbone,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    cache: AnswerCache | None = None,
    layer: int | None = None,
) -> tuple[list[str], dict[int, torch.Tensor]]:
    """The model's greedy answers to formatted `prompts` (only those missing from `cache` are generated) and, with a
    `layer`, the response-averaged state at that layer of each answer generated now, read during its generation
    (prompt index -> [hidden]); cached answers have none."""
    cache = cache if cache is not None else AnswerCache()
    keys = [AnswerCache.key(backbone.name, p, max_new_tokens) for p in prompts]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache.answers}.values(), key=lambda i: len(prompts[i]))  # less padding
    states: dict[int, torch.Tensor] = {}
    with progress_bar("model's own answers", len(missing)) as advance:
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            capture = capture_for(backbone, "response_avg") if layer is not None else None
            answers = generate(backbone, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens, batch_size=batch_size, capture=capture)
            if capture is not None:
                states.update(zip(chunk, capture.result()[:, layer]))
            cache.add([keys[i] for i in chunk], answers)
            advance(len(chunk))
    return [cache.answers[k] for k in keys], states


class ScreeningError(PersonactlError):
    """A dataset the screen cannot score."""


OWN_EMPTY = "the model's own answer is empty"


@dataclass
class Screening:
    """Per-sample projections and differences (dataset order) and the dataset-level summary."""

    rows: list[dict]
    summary: dict

    def ranked(self) -> list[dict]:
        """Samples from the most trait-inducing down (samples without a difference last)."""
        return sorted(self.rows, key=lambda r: -math.inf if r["difference"] is None else r["difference"], reverse=True)

    def flagged(self, top_percent: float) -> set[int]:
        """Indices of the top `top_percent` % samples by projection difference; identical samples share one score, so
        a copy of a flagged sample is flagged with it."""
        count = math.ceil(len(self.rows) * top_percent / 100)
        top = [r["difference"] for r in self.ranked()[:count] if r["difference"] is not None]
        return {r["index"] for r in self.rows if top and r["difference"] is not None and r["difference"] >= top[-1]}

    def unscored(self) -> dict[str, list[int]]:
        """Why samples were kept without a score: reason -> their file lines (dataset indices when built in code)."""
        reasons: dict[str, list[int]] = {}
        for r in self.rows:
            if r["not_scored"]:
                reasons.setdefault(r["not_scored"], []).append(r["index"] if r["line"] is None else r["line"])
        return reasons


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _unscorable(question: str, answer: str, max_chars: int) -> str | None:
    """Why a sample cannot be scored (None: it can)."""
    if not answer.strip():
        return "empty output (no answer tokens to project)"
    if len(question) + len(answer) > max_chars:
        return f"over {max_chars} characters (fine-tuning skips it too)"
    return None


def _lines(numbers: Sequence[int]) -> str:
    return ", ".join(map(str, numbers[:8])) + ("..." if len(numbers) > 8 else "")


def unscored_note(result: Screening) -> str | None:
    """One line on the samples kept without a score and why (None when every sample was scored)."""
    reasons = result.unscored()
    if not reasons:
        return None
    return "kept but not scored: " + "; ".join(f"{len(n)} {reason} (lines {_lines(n)})" for reason, n in reasons.items())


def conclusion(mean: float | None, low: float | None, high: float | None) -> str:
    """What the mean projection difference and its 95% CI allow one to say about the dataset."""
    if mean is None or low is None or high is None or math.isnan(low):
        return "cannot conclude: no sample could be scored"
    if low > 0:
        return "pushes toward the trait: the 95% CI of the mean difference lies above 0"
    if high < 0:
        return "pushes away from the trait: the 95% CI of the mean difference lies below 0"
    return "cannot conclude: the 95% CI of the mean difference includes 0"


def mean_difference(differences: Sequence[float], prompts: Sequence[str]) -> tuple[float, float, float]:
    """(mean, low, high) of the projection difference over prompts: the samples of one prompt share the model's own
    answer (and a copy adds no evidence), so each prompt's differences are averaged first and t runs over prompts."""
    return mean_ci(differences, prompts)


def screen(
    backbone: Backbone,
    data: PersonaData,
    vector: PersonaVector,
    layer: int,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    cache: AnswerCache | None = None,
    max_chars: int = MAX_RECORD_CHARS,
) -> Screening:
    """Projection difference of every sample at `layer` (see the module docstring).

    Every sample gets a row; one with an empty output, over `max_chars` or whose own answer is empty gets no
    difference and says why (`not_scored`). Identical samples are scored once and share the score."""
    vector.check_compatible(backbone)
    backbone.check_layer(layer, allow_embedding=False)
    reasons = [_unscorable(q, a, max_chars) for q, a in zip(data.questions, data.answers)]
    pairs = list(dict.fromkeys((q, a) for q, a, reason in zip(data.questions, data.answers, reasons) if reason is None))
    if not pairs:
        counts = "; ".join(f"{n} {reason}" for reason, n in Counter(reasons).items())
        raise ScreeningError(f"no sample can be scored: {counts or 'the dataset is empty'}")
    questions = list(dict.fromkeys(q for q, _ in pairs))
    prompts = dict(zip(questions, format_prompts(backbone, [chat_prompt(q) for q in questions])))
    answers, captured = own_answers(backbone, list(prompts.values()), max_new_tokens=max_new_tokens, batch_size=batch_size, cache=cache, layer=layer)
    own = dict(zip(questions, answers))
    items = [(prompts[q], a) for q, a in pairs] + [(prompts[q], own[q]) for q in questions]
    states = {len(pairs) + k: state for k, state in captured.items()}  # own answers read while they were generated
    kept = [i for i, (_, text) in enumerate(items) if text.strip() and i not in states]  # an empty answer has no tokens to average
    with progress_bar("capture the answers not captured while generating", len(kept)) as advance:
        acts = activations.collect_layer(
            backbone,
            [items[i][0] for i in kept],
            [items[i][1] for i in kept],
            layer,
            positions="response_avg",
            batch_size=batch_size,
            on_batch=advance,
        )
    states.update(zip(kept, acts))
    unit = vector.unit(layer)
    values: list[float | None] = [None] * len(items)
    for i, state in states.items():
        if items[i][1].strip():
            values[i] = _value(float(state @ unit))
    data_projection, model_projection = dict(zip(pairs, values[: len(pairs)])), dict(zip(questions, values[len(pairs) :]))
    rows: list[dict[str, Any]] = []
    for i, (q, a, reason) in enumerate(zip(data.questions, data.answers, reasons)):
        data_p, own_p = data_projection.get((q, a)), model_projection.get(q)
        difference = None if data_p is None or own_p is None else data_p - own_p
        rows.append(
            {
                "index": i,
                "line": data.lines[i] if data.lines else None,
                "prompt": q[:200],
                "data_projection": data_p,
                "model_projection": own_p,
                "difference": difference,
                "not_scored": reason or (OWN_EMPTY if difference is None else None),
                "data_answer": a,
                "model_answer": own.get(q),
            }
        )
    differences = [r["difference"] for r in rows if r["difference"] is not None]
    scored_prompts = [data.questions[r["index"]] for r in rows if r["difference"] is not None]
    mean, low, high = mean_difference(differences, scored_prompts) if differences else (math.nan,) * 3
    summary = {
        "trait": vector.trait,
        "model": backbone.name,
        "vector": vector.fingerprint(),
        "layer": layer,
        "n": len(rows),
        "scored": len(differences),
        "prompts": len(set(scored_prompts)),
        "not_scored": dict(Counter(r["not_scored"] for r in rows if r["not_scored"])),
        "mean_difference": _value(mean),
        "mean_difference_ci": [_value(low), _value(high)],
        "positive_share": sum(d > 0 for d in differences) / len(differences) if differences else None,
        "conclusion": conclusion(_value(mean), _value(low), _value(high)),
        "max_new_tokens": max_new_tokens,
        "data_sha256": data.sha256,
    }
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
<p class="note">{{ s.scored }} of {{ s.n }} samples scored ({{ s.prompts }} prompts); mean projection difference {{ "%+.3f"|format(s.mean_difference) }}
{% if s.mean_difference_ci[0] is not none %}(95% CI {{ "%+.3f"|format(s.mean_difference_ci[0]) }} .. {{ "%+.3f"|format(s.mean_difference_ci[1]) }}){% endif %};
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


def write_without(source: str | Path, lines: set[int], path: str | Path) -> Path:
    """`source` less its `lines` (1-based, numbered as the dataset reader numbers them): every other line byte for byte,
    in order, its line ending included."""
    kept = [line for number, line in enumerate(re.split(rb"(?<=\n)", Path(source).read_bytes()), 1) if number not in lines]
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(kept))
    return Path(path)
