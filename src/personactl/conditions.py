"""Conditions for conditional steering: a direction and a threshold that tell one kind of prompt from another.

`find_condition(backbone, positive, negative)` splits each set of prompts into
training and held-out prompts (seeded), takes every layer's mean activation over
each chat-formatted prompt (`steering.prompt_mean`: its tokens after the chat
template's prefix that every prompt shares, `template_prefix`; the score
`steering.Condition` reads while generating), a direction per layer from the
training prompts (by default a logistic-regression probe, `direction`), and
per layer the threshold that best separates the training projections (balanced
accuracy; among equally good thresholds the midpoint of the widest gap). The
layer is chosen on the training prompts alone: k-fold cross-validated accuracy,
ties broken by the margin. The held-out prompts never take part in a choice, so
the held-out accuracy reported per layer is an honest estimate, and an
experiment may measure firing rates on them.

The result is saved as a PersonaVector whose metadata (`extra["condition"]`)
holds the chosen layer, threshold, comparison and prefix and the per-layer table,
so `generate --condition V` needs no other number.

`conditional_effect` says what conditional steering did to judged answers:
firing rates and paired trait differences (steered - unsteered) per question,
and the criteria a run is held to (`ConditionalEffect.criteria`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from . import activations
from .aggregators import logistic, mean_diff, separation
from .errors import ConditionError
from .generation import chat_prompt, format_prompts
from .intervals import CONFIDENCE, group_means, t_interval
from .models import Backbone
from .steering import Comparison, Condition, prompt_mean
from .vectors import PersonaVector

BUILTIN = Path(__file__).parent / "data" / "conditions"
METHODS = ("logistic", "lda", "mean_diff")  # how `direction` fits a condition's direction (the first is the default)
FIRES_ON, FIRES_OFF = 0.9, 0.1  # the least share of on-topic and the most share of other questions a condition may fire on
MARGIN = 5.0  # trait points (0-100): the most the other questions' mean may rise for the steering to count as conditional
SCALE = 100.0  # the judges' range: no question can rise by more


@dataclass(frozen=True)
class LayerFit:
    """How well one layer's direction and threshold separate the two sets of prompts."""

    layer: int
    threshold: float
    train_accuracy: float  # balanced accuracy on the training prompts at `threshold`
    cv_accuracy: float  # k-fold cross-validated balanced accuracy within the training prompts (the choice)
    heldout_accuracy: float  # balanced accuracy on the held-out prompts (reported, never used to choose)
    margin: float  # distance from the threshold to the nearest training projection, in pooled standard deviations


@dataclass
class ConditionSearch:
    """The chosen condition, its vector (to save) and the per-layer table."""

    condition: Condition
    vector: PersonaVector
    layers: list[LayerFit]
    train: tuple[list[str], list[str]]  # (positive, negative) training prompts
    heldout: tuple[list[str], list[str]]  # (positive, negative) held-out prompts

    @property
    def chosen(self) -> LayerFit:
        return next(fit for fit in self.layers if fit.layer == self.condition.layer)


def builtin_prompts() -> list[str]:
    """Names of the shipped prompt sets (data/conditions/*.txt): `read_prompts("sea")` reads one."""
    return sorted(p.name[:-4] for p in BUILTIN.iterdir() if p.name.endswith(".txt"))


def read_prompts(path: str | Path) -> list[str]:
    """User prompts from a text file, one per line (blank lines ignored), or a shipped set by name ("sea", "other")."""
    path = Path(path)
    if not path.exists() and path.name == str(path) and not path.suffix and (BUILTIN / f"{path}.txt").is_file():
        path = BUILTIN / f"{path}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConditionError(f"prompt file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConditionError(f"{path} is not UTF-8 text: write one prompt per line") from exc
    except IsADirectoryError as exc:
        raise ConditionError(f"{path} is a folder: give a text file with one prompt per line") from exc
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConditionError(f"prompt file {path} holds no prompts: write one prompt per line")
    return prompts


def split(prompts: Sequence[str], heldout: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) prompts: a seeded shuffle, `heldout` of them (at least one) held out."""
    shuffled = list(prompts)
    random.Random(seed).shuffle(shuffled)
    n_held = max(1, round(heldout * len(shuffled))) if heldout > 0 else 0
    return shuffled[n_held:], shuffled[:n_held]


def balanced_accuracy(pos: torch.Tensor, neg: torch.Tensor, threshold: float, comparison: str = "greater") -> float:
    """Mean of the rates at which positives fire and negatives do not."""
    pos_fired, neg_fired = (pos > threshold, neg > threshold) if comparison == "greater" else (pos < threshold, neg < threshold)
    return 0.5 * (float(pos_fired.float().mean()) + float((~neg_fired).float().mean()))


def best_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[float, float, float]:
    """(threshold, balanced accuracy, gap) for "greater": the best midpoint between sorted projections.

    Among thresholds of equal accuracy the one farthest from every projection wins (the middle of the widest gap).
    """
    values = torch.cat([pos, neg]).double().sort().values
    spread = float(values[-1] - values[0]) or 1.0
    candidates = torch.cat([values[:1] - spread, (values[1:] + values[:-1]) / 2, values[-1:] + spread])
    pos_rate = (pos.double()[None, :] > candidates[:, None]).double().mean(1)
    neg_rate = (neg.double()[None, :] <= candidates[:, None]).double().mean(1)
    accuracy = 0.5 * (pos_rate + neg_rate)
    gap = (values[None, :] - candidates[:, None]).abs().min(1).values
    best = accuracy.max()
    score = torch.where(accuracy >= best - 1e-12, gap, torch.full_like(gap, -1.0))
    i = int(score.argmax())
    return float(candidates[i]), float(accuracy[i]), float(gap[i])


def direction(pos: torch.Tensor, neg: torch.Tensor, method: str = "logistic") -> torch.Tensor:
    """One layer's unit direction [hidden] from activations pos/neg [n, hidden], pointing from neg to pos.

    "logistic" (the default): a logistic-regression probe (`aggregators.logistic`). "lda": Fisher's linear
    discriminant with the covariance shrunk by Ledoit-Wolf (scikit-learn). Both discount the directions in which
    prompts vary whatever their topic (wording, length, form), which "mean_diff", the difference of the means,
    counts in full: on SmolLM2's sea/other sets (70+70 training prompts) 5-fold cross-validated accuracy of the
    chosen layer is 0.99 (logistic), 0.98 (lda) and 0.91 (mean_diff); see docs/experiments.md.
    """
    if method == "mean_diff":
        w = mean_diff(pos, neg)
    elif method == "logistic":
        w = logistic(pos[:, None], neg[:, None])[0]
    elif method == "lda":
        import numpy as np  # noqa: PLC0415
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # noqa: PLC0415 - slow import

        x = torch.cat([pos, neg]).double().numpy()
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        if len(pos) < 2 or len(neg) < 2 or float(x.std(0).max()) == 0.0:
            w = mean_diff(pos, neg)  # too few prompts for a covariance
        else:
            fit = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, labels)
            w = torch.from_numpy(fit.coef_[0]).float()
    else:
        raise ConditionError(f"unknown condition method '{method}': use one of {', '.join(METHODS)}")
    w = w.float()
    if float((pos.float().mean(0) - neg.float().mean(0)) @ w) < 0:
        w = -w
    return w / w.norm().clamp_min(1e-12)


def _fit_layer(pos: torch.Tensor, neg: torch.Tensor, method: str = "logistic") -> tuple[torch.Tensor, float]:
    """Unit direction [hidden] and best threshold for one layer's activations [n, hidden]."""
    unit = direction(pos, neg, method)
    threshold, _, _ = best_threshold(pos @ unit, neg @ unit)
    return unit, threshold


def cross_validated_accuracy(pos: torch.Tensor, neg: torch.Tensor, folds: int = 5, method: str = "logistic") -> float:
    """Balanced accuracy of out-of-fold decisions (direction and threshold refitted without the fold).

    `pos`/`neg`: one layer's activations [n, hidden], already in a random order. Folds are stratified; with fewer
    than two prompts per set for a fold the training accuracy is returned instead."""
    k = min(folds, len(pos), len(neg))
    if k < 2:
        unit, threshold = _fit_layer(pos, neg, method)
        return balanced_accuracy(pos @ unit, neg @ unit, threshold)
    pos_fold, neg_fold = torch.arange(len(pos)) % k, torch.arange(len(neg)) % k
    pos_hits, neg_hits = 0, 0
    for f in range(k):
        unit, threshold = _fit_layer(pos[pos_fold != f], neg[neg_fold != f], method)
        pos_hits += int(((pos[pos_fold == f] @ unit) > threshold).sum())
        neg_hits += int(((neg[neg_fold == f] @ unit) <= threshold).sum())
    return 0.5 * (pos_hits / len(pos) + neg_hits / len(neg))


def template_prefix(backbone: Backbone, system: str | None = None) -> int:
    """Tokens of the chat-formatted prompt before the user's message, the same for every prompt (at least 1).

    Two different one-word messages are formatted with `backbone.chat` (and `system`); the tokens they share
    from the start are the template's (SmolLM2: its default system prompt and the user header, 24 tokens). A
    plain transcript without a template shares little ("User:"), and the first token is always left out
    (`steering.prompt_mean`)."""
    a, b = backbone.encode(format_prompts(backbone, [chat_prompt("Zebra", system), chat_prompt("apple", system)]))
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return max(n, 1)


@torch.no_grad()
def prompt_activations(
    backbone: Backbone,
    texts: Sequence[str],
    *,
    skip: int = 1,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Every layer's `prompt_mean` (its first `skip` tokens left out) of formatted prompts (what a Condition with
    `skip_prefix=skip` scores): [n, layers+1, hidden]."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = activations.make_batch(backbone, texts[start : start + batch_size])
        states = activations.hidden_states(backbone, batch.input_ids, batch.attention_mask)
        mask = batch.attention_mask.to(states.device)
        chunks.append(torch.stack([prompt_mean(layer, mask, skip) for layer in states], 1).cpu())
        if on_batch is not None:
            on_batch(len(batch.input_ids))
    return torch.cat(chunks)


def check_request(positive: Sequence[str], negative: Sequence[str], heldout: float) -> None:
    """ConditionError unless the prompts and the held-out fraction allow a search (call it before loading a model)."""
    if not 0 <= heldout < 1:
        raise ConditionError(f"held-out fraction {heldout:g} is outside [0, 1): use e.g. 0.3")
    need = 3 if heldout > 0 else 1
    for label, prompts in (("positive", positive), ("negative", negative)):
        if len(prompts) < need:
            raise ConditionError(f"{len(prompts)} {label} prompt(s): give at least {need} (for training and held-out)")


def find_condition(
    backbone: Backbone,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    heldout: float = 0.3,
    seed: int = 0,
    folds: int = 5,
    system: str | None = None,
    method: str = "logistic",
    skip_prefix: int | None = None,
    name: str = "condition",
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> ConditionSearch:
    """The layer and threshold whose prompt projections best tell `positive` user prompts from `negative` ones.

    Searches layers 1..n_layers-1 (HF reports the last layer after the final norm, which no hook sees). The
    condition fires ("greater") on prompts like the positive ones. `method` fits the directions (`direction`);
    `skip_prefix` is the number of leading tokens left out of each prompt's score (default: the chat template's
    shared prefix, `template_prefix`; 1 reads every token but the first).
    """
    check_request(positive, negative, heldout)
    if method not in METHODS:
        raise ConditionError(f"unknown condition method '{method}': use one of {', '.join(METHODS)}")
    if backbone.n_layers < 2:
        raise ConditionError(f"{backbone.name} has {backbone.n_layers} block: a condition needs a layer before the last")
    pos_train, pos_held = split(positive, heldout, seed)
    neg_train, neg_held = split(negative, heldout, seed + 1)
    skip = template_prefix(backbone, system) if skip_prefix is None else max(int(skip_prefix), 1)
    texts = format_prompts(backbone, [chat_prompt(p, system) for p in pos_train + neg_train + pos_held + neg_held])
    acts = prompt_activations(backbone, texts, skip=skip, batch_size=batch_size, on_batch=on_batch)
    a, b, c = len(pos_train), len(pos_train) + len(neg_train), len(pos_train) + len(neg_train) + len(pos_held)
    p_tr, n_tr, p_he, n_he = acts[:a], acts[a:b], acts[b:c], acts[c:]
    fits = []
    for layer in range(1, backbone.n_layers):
        unit = direction(p_tr[:, layer], n_tr[:, layer], method)
        pos_s, neg_s = p_tr[:, layer] @ unit, n_tr[:, layer] @ unit
        threshold, train_acc, gap = best_threshold(pos_s, neg_s)
        pooled = math.sqrt((float(pos_s.var()) if len(pos_s) > 1 else 0.0) / 2 + (float(neg_s.var()) if len(neg_s) > 1 else 0.0) / 2)
        held = balanced_accuracy(p_he[:, layer] @ unit, n_he[:, layer] @ unit, threshold) if heldout > 0 else float("nan")
        fits.append(
            LayerFit(
                layer,
                threshold,
                train_acc,
                cross_validated_accuracy(p_tr[:, layer], n_tr[:, layer], folds, method),
                held,
                gap / pooled if pooled > 0 else gap,
            )
        )
    best = max(fits, key=lambda f: (f.cv_accuracy, f.margin))
    directions = torch.stack(
        [_scaled(direction(p_tr[:, layer], n_tr[:, layer], method), p_tr[:, layer], n_tr[:, layer]) for layer in range(acts.shape[1])]
    )
    meta = {
        "layer": best.layer,
        "threshold": best.threshold,
        "comparison": "greater",
        "skip_prefix": skip,
        "method": method,
        "thresholds": {str(f.layer): f.threshold for f in fits},
        "accuracy": {str(f.layer): f.heldout_accuracy for f in fits},
        "cv_accuracy": {str(f.layer): f.cv_accuracy for f in fits},
        "train_accuracy": {str(f.layer): f.train_accuracy for f in fits},
        "margin": {str(f.layer): f.margin for f in fits},
        "n_train": [len(pos_train), len(neg_train)],
        "n_heldout": [len(pos_held), len(neg_held)],
        "heldout_fraction": heldout,
        "seed": seed,
        "folds": folds,
        "system": system,
        "chosen_by": "cross-validated accuracy on the training prompts, then margin",
    }
    vector = PersonaVector(
        directions,
        trait=name,
        model=backbone.name,
        method=method,
        positions=f"prompt_avg_skip_{skip}",
        n_samples=len(pos_train) + len(neg_train),
        separation=separation(p_tr, n_tr, directions).tolist(),
        extra={"condition": meta},
    )
    return ConditionSearch(Condition(vector, best.layer, best.threshold, "greater", skip), vector, fits, (pos_train, neg_train), (pos_held, neg_held))


def _scaled(unit: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """`unit` scaled to the distance between the classes' mean projections (a direction's stored length)."""
    return unit * max(float((pos.float().mean(0) - neg.float().mean(0)) @ unit), 1e-12)


def condition_from_vector(
    vector: PersonaVector, layer: int | None = None, threshold: float | None = None, comparison: str | None = None
) -> Condition:
    """A Condition from a vector file's metadata (written by `find_condition`), overridden by what is given.

    A layer other than the chosen one takes the threshold found for that layer. The score skips the prefix the
    condition was found with (`skip_prefix`; files written before it existed: 1, the first token)."""
    meta = vector.extra.get("condition", {}) if isinstance(vector.extra, dict) else {}
    if layer is None:
        if "layer" not in meta:
            raise ConditionError(f"vector '{vector.trait}' holds no condition layer: give --condition-layer (and --threshold)")
        layer = int(meta["layer"])
    if threshold is None:
        found = meta.get("thresholds", {}).get(str(layer))
        if found is None and meta.get("layer") == layer:
            found = meta.get("threshold")
        if found is None:
            raise ConditionError(f"vector '{vector.trait}' holds no threshold for layer {layer}: give --threshold")
        threshold = float(found)
    if not math.isfinite(threshold):
        raise ConditionError(f"threshold {threshold} is not a finite number")
    comparison = comparison or meta.get("comparison", "greater")
    if comparison not in ("greater", "less"):
        raise ConditionError(f"comparison '{comparison}' is not one of: greater, less")
    return Condition(vector, layer, threshold, cast(Comparison, comparison), int(meta.get("skip_prefix", 1)))


def layer_table(search: ConditionSearch) -> list[dict]:
    """The per-layer fits as plain rows (for printing and JSON)."""
    return [asdict(fit) for fit in search.layers]


Interval = tuple[float, float, float]  # (mean, low, high)


def rise_bound(fired: Sequence[bool], rises: Sequence[float], *, scale: float = SCALE, confidence: float = CONFIDENCE) -> float:
    """Upper bound (one-sided, at the level of a `confidence` interval's upper end) of the mean rise over questions
    when only those where the condition `fired` were steered (the others' expected rise is 0).

    The mean rise is (share that fires) x (mean rise where it fires). Each factor gets an upper bound at half the
    error (Bonferroni): Clopper-Pearson's for the share, Student's t for the rise over the questions that fired
    (`scale`, the largest rise possible, with fewer than two). A t interval over all questions, zeros included,
    undercovers when the condition fires rarely (at a 10% firing rate and a true mean rise of 5 points its upper
    bound fell below 5 in 12% of simulated runs; no question fired in 4%, which reads [0, 0]).
    """
    from scipy.stats import beta  # noqa: PLC0415

    fires = np.asarray(fired, dtype=bool)
    k, n = int(fires.sum()), len(fires)
    level = 1 - (1 - confidence) / 2  # each factor's two-sided level: its upper end errs half as often
    share = float(beta.ppf((1 + level) / 2, k + 1, n - k)) if k < n else 1.0  # Clopper-Pearson's upper bound
    hit = np.asarray(rises, dtype=float)[fires]
    rise = min(t_interval(hit, level)[2], scale) if len(hit) >= 2 else scale
    return share * max(rise, 0.0)


@dataclass(frozen=True)
class ConditionalEffect:
    """What conditional steering did, over questions: firing rates and paired rises (steered - unsteered trait)."""

    fires_on: float  # share of on-topic questions the condition fired on
    fires_off: float  # share of the other questions it fired on
    rise_on: Interval  # paired rise on the on-topic questions (mean, 95% CI)
    rise_off: Interval  # paired rise on all the other questions (mean, 95% t CI: descriptive, see `rise_bound`)
    rise_off_fired: Interval  # paired rise on the other questions where it fired (nan bounds with fewer than two)
    rise_off_bound: float  # upper 95% bound of the other questions' mean rise (`rise_bound`)
    n_on: int
    n_off: int
    n_fired_off: int
    margin: float

    def criteria(self) -> dict[str, bool]:
        """The claims a conditional steering run is held to, each True when the data support it."""
        return {
            f"fires on >= {FIRES_ON:.0%} of the on-topic questions": self.fires_on >= FIRES_ON,
            f"fires on <= {FIRES_OFF:.0%} of the other questions": self.fires_off <= FIRES_OFF,
            "trait rises on the on-topic questions (paired CI above 0)": self.rise_on[1] > 0,
            "no rise where it fired on other questions (their paired CI not above 0)": not self.rise_off_fired[1] > 0,
            f"the other questions' mean rise is below {self.margin:g} points (upper 95% bound)": self.rise_off_bound < self.margin,
        }


def conditional_effect(
    on_topic: Sequence[bool],
    fired: Sequence[bool],
    steered: Sequence[float | None],
    unsteered: Sequence[float | None],
    groups: Sequence[Hashable] | None = None,
    *,
    margin: float = MARGIN,
    scale: float = SCALE,
) -> ConditionalEffect:
    """Firing rates and paired trait rises of conditionally steered answers against unsteered ones, per question.

    One entry per answer: whether its question is on-topic, whether the condition fired on its prompt, and the
    trait judged with conditional steering and without (None: unscored, left out). `groups` names each answer's
    question (default: each answer its own); answers and samples of one question are averaged first, so the unit
    of every interval is the question. Rows where the condition did not fire were not steered: they differ only
    by sampling (by exactly 0 when greedy), which is why the other questions are tested where it fired, and
    their mean rise against a bound that can exceed `margin` (`rise_bound`).
    """
    n = len(on_topic)
    if not n == len(fired) == len(steered) == len(unsteered):
        raise ConditionError(f"{n} topics, {len(fired)} firing decisions, {len(steered)} and {len(unsteered)} scores: give one per answer")
    keys: Sequence[Hashable] = range(n) if groups is None else groups
    rises = group_means([None if s is None or u is None else s - u for s, u in zip(steered, unsteered)], keys)
    fires = group_means([float(f) for f in fired], keys)
    topic = dict(zip(keys, on_topic))
    on = [q for q in rises if topic[q]]
    off = [q for q in rises if not topic[q]]
    fired_off = [q for q in off if fires[q] > 0.5]
    return ConditionalEffect(
        fires_on=float(np.mean([fires[q] for q in on])) if on else math.nan,
        fires_off=float(np.mean([fires[q] for q in off])) if off else math.nan,
        rise_on=t_interval([rises[q] for q in on]),
        rise_off=t_interval([rises[q] for q in off]),
        rise_off_fired=t_interval([rises[q] for q in fired_off]),
        rise_off_bound=rise_bound([fires[q] > 0.5 for q in off], [rises[q] for q in off], scale=scale) if off else math.nan,
        n_on=len(on),
        n_off=len(off),
        n_fired_off=len(fired_off),
        margin=margin,
    )
